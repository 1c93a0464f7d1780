"""The chart renders and lints for every scenario, and what it renders is what the design needs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from chart_support import (
    CHART,
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    containers,
    env_of,
    helm,
    pod_spec,
    render,
    render_scenario,
    require_module,
)

WORKLOADS = [
    ("Deployment", f"{RELEASE}-api"),
    ("StatefulSet", f"{RELEASE}-balance"),
    ("StatefulSet", f"{RELEASE}-above-threshold"),
]
STRIMZI_KINDS = {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"}
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lint_is_clean_in_strict_mode(scenario):
    h = helm()
    report = h.lint(str(CHART), SCENARIOS[scenario], strict=True, namespace=NAMESPACE)
    assert report["total_charts_linted"] == 1
    # Severity 2 = warning, 3 = error; strict mode would fail `helm lint` on either.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], f"helm lint --strict: {problems} {report['errors']}"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_scenario_renders_the_three_workloads(scenario):
    rendered = render_scenario(scenario)
    persistent_api = SCENARIOS[scenario].get("api", {}).get("stateVolume", {}).get("persistent", {}).get("enabled")
    for kind, name in WORKLOADS:
        rendered.one("StatefulSet" if persistent_api and name == f"{RELEASE}-api" else kind, name)
    assert f'Wallet service "{RELEASE}"' in rendered.notes
    for m in rendered.manifests:
        assert m.doc["metadata"].get("namespace") == NAMESPACE, f"{m.kind}/{m.name} has no explicit namespace"
        labels = m.doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == RELEASE, f"{m.kind}/{m.name} lacks the instance label"


def test_strimzi_or_external_kafka_decides_the_kafka_resources():
    strimzi = render_scenario("defaults")
    assert {m.kind for m in strimzi.manifests} >= {"Kafka", "KafkaNodePool", "KafkaTopic"}
    assert not strimzi.of_kind("KafkaUser"), "no KafkaUsers without SASL"
    external = render_scenario("external")
    assert not STRIMZI_KINDS & {m.kind for m in external.manifests}, "an external cluster needs no Strimzi resources"
    for kind, name in WORKLOADS:
        env = env_of(containers(external.one(kind, name))[0])
        assert env["KAFKA_BOOTSTRAP_SERVERS"]["value"] == "kafka-0.kafka.example:9092"
        assert env["WALLET_CREATE_TOPICS"]["value"] == "true"
        env = env_of(containers(strimzi.one(kind, name))[0])
        assert env["KAFKA_BOOTSTRAP_SERVERS"]["value"] == f"{RELEASE}-kafka-bootstrap.{NAMESPACE}.svc:9092"
        # Strimzi's Topic Operator owns the topics: the services must not race it.
        assert env["WALLET_CREATE_TOPICS"]["value"] == "false"
        assert "KAFKA_SECURITY_PROTOCOL" not in env


def test_topics_are_the_contracts_with_equal_partitions_and_their_policies():
    rendered = render({"kafka": {"topics": {"partitions": 12, "replicas": 3}}})
    topics = {m.doc["spec"]["topicName"]: m.doc for m in rendered.of_kind("KafkaTopic")}
    assert set(topics) == {"deposit", "balance-table", "above_threshold-table", "table-versions"}
    versions = topics.pop("table-versions")["spec"]  # which version of each table is live (walletctl rebuild)
    assert versions["partitions"] == 1 and versions["config"]["cleanup.policy"] == "compact"
    assert {t["spec"]["partitions"] for t in topics.values()} == {12}
    assert {t["spec"]["replicas"] for t in topics.values()} == {3}
    deposit = topics["deposit"]["spec"]["config"]
    assert deposit["cleanup.policy"] == "delete" and int(deposit["retention.ms"]) == -1, "the ledger never expires"
    for table in ("balance-table", "above_threshold-table"):
        assert topics[table]["spec"]["config"]["cleanup.policy"] == "compact"
    # The policy is not negotiable through values: a changelog must stay compacted.
    forced = render({"kafka": {"topics": {"tableConfig": {"cleanup.policy": "delete", "min.compaction.lag.ms": 1000}}}})
    for topic in forced.of_kind("KafkaTopic"):
        if topic.doc["spec"]["topicName"] != "deposit":
            assert topic.doc["spec"]["config"]["cleanup.policy"] == "compact"
            assert topic.doc["spec"]["config"]["min.compaction.lag.ms"] == 1000
    for m in rendered.of_kind("KafkaTopic") + rendered.of_kind("Kafka") + rendered.of_kind("KafkaNodePool"):
        assert m.doc["metadata"]["labels"].get("strimzi.io/cluster", RELEASE) == RELEASE
        assert m.doc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # WALLET_PARTITIONS follows the same value, so topics a service would create agree too.
    for kind, name in WORKLOADS:
        assert env_of(containers(rendered.one(kind, name))[0])["WALLET_PARTITIONS"]["value"] == "12"


def test_kafka_is_kraft_with_a_node_pool_and_listeners_limited_to_the_release():
    rendered = render_scenario("defaults")
    kafka = rendered.one("Kafka", RELEASE)["spec"]["kafka"]
    assert {(lis["name"], lis["port"], lis["tls"]) for lis in kafka["listeners"]} == {
        ("plain", 9092, False),
        ("tls", 9093, True),
    }
    for listener in kafka["listeners"]:
        peer = listener["networkPolicyPeers"][0]["podSelector"]["matchLabels"]
        assert peer == {"app.kubernetes.io/name": "wallet", "app.kubernetes.io/instance": RELEASE}
    pool = rendered.one("KafkaNodePool", "dual-role")
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == RELEASE
    assert sorted(pool["spec"]["roles"]) == ["broker", "controller"]
    assert pool["spec"]["storage"]["volumes"][0]["kraftMetadata"] == "shared"


def test_tls_and_scram_wire_users_acls_secrets_and_ca_into_every_service():
    rendered = render_scenario("strimzi-tls-scram")
    kafka = rendered.one("Kafka", RELEASE)["spec"]
    assert kafka["kafka"]["authorization"] == {"type": "simple"}
    assert all(lis["authentication"] == {"type": "scram-sha-512"} for lis in kafka["kafka"]["listeners"])
    assert "userOperator" in kafka["entityOperator"]
    users = {m.name: m.doc for m in rendered.of_kind("KafkaUser")}
    assert set(users) == {f"{RELEASE}-api", f"{RELEASE}-balance", f"{RELEASE}-above-threshold"}

    def acl(user, rtype, name):
        ops = [
            a["operations"]
            for a in users[user]["spec"]["authorization"]["acls"]
            if a["resource"]["type"] == rtype and a["resource"]["name"] == name
        ]
        return set(ops[0]) if ops else set()

    # Least privilege, per the services' code: who writes what, which groups.
    assert acl(f"{RELEASE}-api", "topic", "deposit") == {"Write", "Describe"}
    assert "Write" not in acl(f"{RELEASE}-api", "topic", "balance-table")
    assert acl(f"{RELEASE}-balance", "topic", "balance-table") >= {"Read", "Write"}
    assert "Write" not in acl(f"{RELEASE}-balance", "topic", "deposit")
    assert "Write" not in acl(f"{RELEASE}-balance", "topic", "above_threshold-table")
    assert acl(f"{RELEASE}-balance", "group", "balance") == {"Read"}
    assert acl(f"{RELEASE}-above-threshold", "group", "above_threshold") == {"Read"}
    assert acl(f"{RELEASE}-above-threshold", "topic", "above_threshold-table") >= {"Read", "Write"}
    # A rebuilt table lives on as "<group>-vN" / "<group>-vN-table" (walletctl rebuild): prefixed,
    # with the same split of rights, and everyone reads which version is live.
    assert acl(f"{RELEASE}-balance", "topic", "balance-v") >= {"Read", "Write"}
    assert acl(f"{RELEASE}-balance", "group", "balance-v") == {"Read"}
    assert "Write" not in acl(f"{RELEASE}-balance", "topic", "above_threshold-v")
    assert acl(f"{RELEASE}-above-threshold", "topic", "above_threshold-v") >= {"Read", "Write"}
    assert "Write" not in acl(f"{RELEASE}-api", "topic", "balance-v") | acl(
        f"{RELEASE}-api", "topic", "above_threshold-v"
    )
    for user in users:
        assert acl(user, "topic", "table-versions") == {"Read", "Describe"}
    # Exactly-once: every producer registers a transactional id (a processor also those of the
    # departed members it fences), each under its own prefix only.
    assert acl(f"{RELEASE}-api", "transactionalId", "wallet-api-") == {"Write", "Describe"}
    assert acl(f"{RELEASE}-balance", "transactionalId", "balance-") == {"Write", "Describe"}
    assert acl(f"{RELEASE}-above-threshold", "transactionalId", "above_threshold-") == {"Write", "Describe"}
    assert not acl(f"{RELEASE}-balance", "transactionalId", "above_threshold-")
    for user in users:  # every service checks that all three topics are co-partitioned
        for topic in ("deposit", "balance-table", "above_threshold-table"):
            assert "Describe" in acl(user, "topic", topic), f"{user} cannot describe {topic}"

    for kind, name in WORKLOADS:
        workload = rendered.one(kind, name)
        container = containers(workload)[0]
        env = env_of(container)
        assert env["KAFKA_BOOTSTRAP_SERVERS"]["value"].endswith(":9093")
        assert env["KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert env["KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
        assert env["KAFKA_SASL_USERNAME"]["value"] == name, "the username is the component's KafkaUser"
        # The password: a read-only file of the KafkaUser's Secret (written by Strimzi), not an env var.
        assert "KAFKA_SASL_PASSWORD" not in env
        assert password_file_secret(workload, container) == {
            "secretName": name,
            "defaultMode": 0o440,
            "items": [{"key": "password", "path": "password"}],
        }
        ca_path = env["KAFKA_SSL_CA_LOCATION"]["value"]
        mount = next(v for v in container["volumeMounts"] if v["name"] == "kafka-ca")
        assert ca_path == f"{mount['mountPath']}/ca.crt" and mount["readOnly"]
        volume = next(v for v in pod_spec(workload)["volumes"] if v["name"] == "kafka-ca")
        assert volume["secret"]["secretName"] == f"{RELEASE}-cluster-ca-cert"
        assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]


def test_external_tls_sasl_takes_credentials_and_ca_from_named_secrets():
    rendered = render_scenario("external-tls-sasl")
    for kind, name in WORKLOADS:
        workload = rendered.one(kind, name)
        env = env_of(containers(workload)[0])
        assert env["KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert env["KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-256"
        assert env["KAFKA_SASL_USERNAME"]["valueFrom"]["secretKeyRef"] == {
            "name": "wallet-kafka-credentials",
            "key": "username",
        }
        assert "KAFKA_SASL_PASSWORD" not in env
        assert password_file_secret(workload, containers(workload)[0]) == {
            "secretName": "wallet-kafka-credentials",
            "defaultMode": 0o440,
            "items": [{"key": "password", "path": "password"}],
        }
        assert env["WALLET_CREATE_TOPICS"]["value"] == "false"
        volume = next(v for v in pod_spec(workload)["volumes"] if v["name"] == "kafka-ca")
        assert volume["secret"] == {"secretName": "corp-kafka-ca", "items": [{"key": "ca.pem", "path": "ca.crt"}]}


def password_file_secret(workload, container):
    """The Secret volume KAFKA_SASL_PASSWORD_FILE points into (checked: a read-only mount of it)."""
    path = env_of(container)["KAFKA_SASL_PASSWORD_FILE"]["value"]
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    assert mount["readOnly"] is True, mount
    volume = next(v for v in pod_spec(workload)["volumes"] if v["name"] == mount["name"])
    assert path == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    return volume["secret"]


def test_no_secret_material_is_rendered_from_values():
    for scenario in SCENARIOS:
        rendered = render_scenario(scenario)
        assert not rendered.of_kind("Secret"), "the chart never carries secrets"
        for m in rendered.manifests:
            if m.kind not in ("Deployment", "StatefulSet", "Pod"):
                continue
            for container in containers(m.doc):
                for var in env_of(container).values():
                    if var["name"].endswith("PASSWORD"):
                        # Only wallet-operator, which reads its KAFKA_* variables itself, still does this.
                        assert m.name == f"{RELEASE}-operator", f"{m.name}: {var['name']} in the environment"
                        assert "value" not in var and "secretKeyRef" in var["valueFrom"]
                    elif var["name"].endswith("PASSWORD_FILE"):
                        assert password_file_secret(m.doc, container)["secretName"]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_pods_meet_the_restricted_pod_security_standard(scenario):
    rendered = render_scenario(scenario)
    pods = [m.doc for m in rendered.manifests if m.kind in ("Deployment", "StatefulSet", "Pod")]
    assert len(pods) >= 3
    for doc in pods:
        spec = pod_spec(doc)
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(key), where
        assert all("hostPath" not in v for v in spec.get("volumes", [])), where
        for c in containers(doc):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), where
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0, where
            assert c["resources"]["requests"] and c["resources"]["limits"], where
            # Only the state volume and /tmp are writable.
            writable = {m["mountPath"] for m in c.get("volumeMounts", []) if not m.get("readOnly")}
            assert writable <= {"/var/lib/wallet", "/tmp"}, f"{where} writes to {writable}"


def test_probes_use_the_services_real_endpoints_on_the_served_port():
    """A processor serves its operations endpoints on its only port (http, WALLET_HTTP_PORT); the
    API serves them only on its operations listener (ops, WALLET_OPS_PORT), apart from the public API."""
    rendered = render_scenario("defaults")
    for kind, name in WORKLOADS:
        container = containers(rendered.one(kind, name))[0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        env = env_of(container)
        assert env["WALLET_HTTP_PORT"]["value"] == str(ports["http"]), "the process serves the named port"
        probed = "ops" if kind == "Deployment" else "http"
        if kind == "Deployment":
            assert ports == {"http": 8080, "ops": 8090}
            assert env["WALLET_OPS_PORT"]["value"] == str(ports["ops"]), "the process serves the probed port"
        else:
            assert set(ports) == {"http"} and "WALLET_OPS_PORT" not in env
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": probed}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": probed}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": probed}
    moved = containers(render({"api": {"opsPort": 9100, "containerPort": 8000}}).one("Deployment", f"{RELEASE}-api"))[0]
    assert {p["name"]: p["containerPort"] for p in moved["ports"]} == {"http": 8000, "ops": 9100}
    assert env_of(moved)["WALLET_OPS_PORT"]["value"] == "9100" and env_of(moved)["WALLET_HTTP_PORT"]["value"] == "8000"
    with pytest.raises(helm().HelmRenderError, match="need a listener each"):
        render({"api": {"opsPort": 8080}})


def test_processors_are_statefulsets_with_state_volumes_and_static_membership():
    rendered = render_scenario("hpa-scaled")
    for component in ("balance", "above-threshold"):
        sts = rendered.one("StatefulSet", f"{RELEASE}-{component}")
        spec = sts["spec"]
        assert spec["replicas"] == 8
        assert spec["serviceName"] == f"{RELEASE}-{component}-headless"
        headless = rendered.one("Service", f"{RELEASE}-{component}-headless")
        assert headless["spec"]["clusterIP"] == "None"
        assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Delete"}
        claim = spec["volumeClaimTemplates"][0]
        if component == "balance":
            assert claim["spec"]["storageClassName"] == "fast-ssd"
            assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
        container = containers(sts)[0]
        assert {"name": "state", "mountPath": "/var/lib/wallet"} in container["volumeMounts"]
        assert claim["metadata"]["name"] == "state"
        env = env_of(container)
        assert env["WALLET_STATE_DIR"]["value"] == "/var/lib/wallet"
        assert env["WALLET_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert pod_spec(sts)["terminationGracePeriodSeconds"] >= 60, "time to flush and commit on SIGTERM"
        pdb = rendered.one("PodDisruptionBudget", f"{RELEASE}-{component}")
        assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    threshold_env = env_of(containers(rendered.one("StatefulSet", f"{RELEASE}-above-threshold"))[0])
    assert threshold_env["WALLET_THRESHOLD"]["value"] == "10000"
    assert threshold_env["WALLET_WINDOW_SECONDS"]["value"] == "120"


@pytest.mark.parametrize("processor,key", [("balance", "balance"), ("aboveThreshold", "aboveThreshold")])
def test_rendering_fails_clearly_when_processor_replicas_exceed_partitions(processor, key):
    h = helm()
    with pytest.raises(h.HelmRenderError) as failure:
        render({key: {"replicaCount": 9}, "kafka": {"topics": {"partitions": 8}}})
    message = str(failure.value)
    assert f"{processor}.replicaCount (9) must not exceed kafka.topics.partitions (8)" in message
    assert "idle" in message
    render({key: {"replicaCount": 8}, "kafka": {"topics": {"partitions": 8}}})  # the bound itself is fine


@pytest.mark.parametrize(
    "values,expected",
    [
        ({"kafka": {"strimzi": {"enabled": False}}}, "no Kafka"),
        ({"kafka": {"external": {"bootstrapServers": "k:9092"}}}, "choose one Kafka"),
        (
            {
                "kafka": {
                    "strimzi": {"enabled": False},
                    "external": {"bootstrapServers": "k:9092"},
                    "sasl": {"enabled": True},
                }
            },
            "existingSecret",
        ),
        ({"kafka": {"sasl": {"enabled": True, "mechanism": "PLAIN"}}}, "SCRAM-SHA-512"),
        (
            {"api": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}},
            r"minReplicas \(5\) is above",
        ),
    ],
)
def test_inconsistent_values_fail_with_a_message(values, expected):
    h = helm()
    with pytest.raises(h.HelmRenderError, match=expected):
        render(values)


@pytest.mark.parametrize(
    "values,path",
    [
        ({"api": {"replicaCount": "two"}}, "/api/replicaCount"),
        ({"kafka": {"topics": {"partitions": 0}}}, "/kafka/topics/partitions"),
        ({"aboveThreshold": {"threshold": "ten thousand"}}, "/aboveThreshold/threshold"),
        ({"api": {"ingres": {"enabled": True}}}, "ingres"),
        ({"logLevel": "verbose"}, "/logLevel"),
    ],
)
def test_the_values_schema_rejects_bad_values(values, path):
    h = helm()
    with pytest.raises(h.HelmValuesError, match=path):
        render(values)


def test_a_persistent_api_state_is_a_statefulset_with_a_volume_per_pod_that_the_hpa_scales():
    """api.stateVolume.persistent: a replaced API pod gets its views' RocksDB back (they resume
    from their checkpoint) instead of reading both changelog topics from offset 0."""
    rendered = render_scenario("api-persistent")
    assert not rendered.of_kind("Deployment") or all(m.name != f"{RELEASE}-api" for m in rendered.of_kind("Deployment"))
    api = rendered.one("StatefulSet", f"{RELEASE}-api")["spec"]
    claim = api["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "state"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "fast-ssd",
        "resources": {"requests": {"storage": "4Gi"}},
    }
    pod = api["template"]["spec"]
    assert "state" not in {v["name"] for v in pod["volumes"]}, "the emptyDir would shadow the claim"
    mounts = {
        m["name"]: m["mountPath"] for m in containers(rendered.one("StatefulSet", f"{RELEASE}-api"))[0]["volumeMounts"]
    }
    state_dir = env_of(containers(rendered.one("StatefulSet", f"{RELEASE}-api"))[0])["WALLET_STATE_DIR"]["value"]
    assert state_dir.startswith(mounts["state"]), (mounts, state_dir)
    assert "replicas" not in api  # the HPA owns them
    assert api["serviceName"] == f"{RELEASE}-api-headless"
    assert rendered.one("Service", f"{RELEASE}-api-headless")["spec"]["clusterIP"] == "None"
    assert api["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Delete"}
    hpa = rendered.one("HorizontalPodAutoscaler", f"{RELEASE}-api")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": f"{RELEASE}-api"}
    # Off (the default): a Deployment whose emptyDir outlives container restarts only.
    default = render_scenario("defaults").one("Deployment", f"{RELEASE}-api")["spec"]
    assert {v["name"]: v for v in default["template"]["spec"]["volumes"]}["state"]["emptyDir"]["sizeLimit"] == "1Gi"


def test_hpa_replaces_the_fixed_replica_count():
    rendered = render_scenario("hpa-scaled")
    deployment = rendered.one("Deployment", f"{RELEASE}-api")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    hpa = rendered.one("HorizontalPodAutoscaler", f"{RELEASE}-api")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{RELEASE}-api"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 10)
    assert {m["resource"]["name"] for m in hpa["metrics"]} == {"cpu", "memory"}
    assert not render_scenario("defaults").of_kind("HorizontalPodAutoscaler")
    assert render_scenario("defaults").one("Deployment", f"{RELEASE}-api")["spec"]["replicas"] == 2


PUBLIC_PATHS = [
    ("Exact", "/deposit"),
    ("PathPrefix", "/details/"),
    ("Exact", "/openapi.yaml"),
    ("Exact", "/openapi.json"),
]


def test_api_service_and_ingress_reach_port_8080():
    rendered = render_scenario("defaults")
    service = rendered.one("Service", f"{RELEASE}-api")["spec"]
    assert service["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"},
        {"name": "ops", "port": 8090, "targetPort": "ops", "protocol": "TCP"},
    ]
    assert not [m for m in rendered.manifests if m.kind in ("Ingress", "HTTPRoute", "Gateway")], (
        "no Gateway named and no Gateway API served here: no way in is invented"
    )
    ingress = render_scenario("ingress").one("Ingress", f"{RELEASE}-api")["spec"]
    assert ingress["ingressClassName"] == "nginx"
    # Only the public API, to port http: /metrics, /healthz and /readyz stay inside the cluster.
    paths = ingress["rules"][0]["http"]["paths"]
    assert [(p["pathType"], p["path"]) for p in paths] == [
        ("Prefix" if t == "PathPrefix" else t, v) for t, v in PUBLIC_PATHS
    ]
    for path in paths:
        assert path["backend"]["service"] == {"name": f"{RELEASE}-api", "port": {"name": "http"}}
    assert "host" not in ingress["rules"][0], "no host: localhost works"
    api = rendered.one("Deployment", f"{RELEASE}-api")
    assert service["selector"] == api["spec"]["selector"]["matchLabels"]
    assert rendered.one("PodDisruptionBudget", f"{RELEASE}-api")["spec"]["maxUnavailable"] == 1
    volume = next(v for v in pod_spec(api)["volumes"] if v["name"] == "state")
    assert "emptyDir" in volume, "the views are a cache of the changelogs"
    custom = render({"api": {"ingress": {"enabled": True, "className": "traefik", "host": "wallet.example.com"}}})
    rule = custom.one("Ingress", f"{RELEASE}-api")
    assert rule["spec"]["ingressClassName"] == "traefik" and rule["spec"]["rules"][0]["host"] == "wallet.example.com"
    assert not render_scenario("minimal").of_kind("Ingress")


def test_monitoring_resources_exist_only_when_asked_and_select_the_right_pods():
    assert not MONITORING_KINDS & {m.kind for m in render_scenario("defaults").manifests}
    rendered = render_scenario("monitoring")
    sm = rendered.one("ServiceMonitor", f"{RELEASE}-api")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    api_service = rendered.one("Service", f"{RELEASE}-api")
    assert sm["spec"]["selector"]["matchLabels"].items() <= api_service["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == "ops" and sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert "ops" in {p["name"] for p in api_service["spec"]["ports"]}, "the scraped port is on the Service"
    pm = rendered.one("PodMonitor", f"{RELEASE}-processors")["spec"]
    expr = pm["selector"]["matchExpressions"][0]
    assert expr["key"] == "app.kubernetes.io/component" and set(expr["values"]) == {"balance", "above-threshold"}
    rule = rendered.one("PrometheusRule", RELEASE)
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"WalletProcessorDown", "WalletApiErrorRatioHigh"} <= set(alerts)
    assert f'pod=~"{RELEASE}-(balance|above-threshold)-[0-9]+"' in alerts["WalletProcessorDown"]["expr"]
    assert "{{ $labels.pod }}" in alerts["WalletProcessorDown"]["annotations"]["summary"], "left for Prometheus"
    dashboards = rendered.of_kind("ConfigMap")
    assert dashboards and all(d.doc["metadata"]["labels"]["grafana_dashboard"] == "1" for d in dashboards)
    for d in dashboards:
        for text in d.doc["data"].values():
            assert json.loads(text)["panels"], "a dashboard with panels"


def test_network_policies_deny_by_default_and_allow_what_the_design_needs():
    rendered = render_scenario("defaults")
    policies = {m.name: m.doc["spec"] for m in rendered.of_kind("NetworkPolicy")}
    deny = policies[f"{RELEASE}-default-deny"]
    assert deny["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "wallet",
        "app.kubernetes.io/instance": RELEASE,
    }
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny and "egress" not in deny
    api = policies[f"{RELEASE}-api"]
    sources = [peer for rule in api["ingress"] for peer in rule["from"]]
    assert any(
        p.get("namespaceSelector", {}).get("matchLabels") == {"kubernetes.io/metadata.name": "envoy-gateway-system"}
        and p.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": "envoy"}
        for p in sources
    ), "the Gateway's proxies -> API"
    assert any(
        p.get("namespaceSelector", {}).get("matchLabels") == {"kubernetes.io/metadata.name": "monitoring"}
        for p in sources
    ), "Prometheus -> API metrics"

    # The public port from the Gateway's proxies and labelled clients; the operations port from
    # Prometheus and from nothing else.
    def sources_of(port):
        return [
            peer for rule in api["ingress"] if any(p["port"] == port for p in rule["ports"]) for peer in rule["from"]
        ]

    assert {p["port"] for rule in api["ingress"] for p in rule["ports"]} == {"http", "ops"}
    assert all(len(rule["ports"]) == 1 for rule in api["ingress"]), "one port per rule: no rule opens both"
    assert sources_of("ops") == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]
    assert not any(
        p.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "monitoring"
        for p in sources_of("http")
    ), "Prometheus scrapes ops, not the public port"
    assert len(sources_of("http")) == 2, "the Gateway's proxies and labelled clients"
    processors = policies[f"{RELEASE}-processors"]
    assert len(processors["ingress"]) == 1, "only Prometheus reaches a processor"
    for policy in (api, processors):
        egress_ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
        assert egress_ports == {(53, "UDP"), (53, "TCP"), (9092, "TCP"), (9093, "TCP")}
        kafka_rule = next(rule for rule in policy["egress"] if rule["ports"][0]["port"] == 9092)
        assert kafka_rule["to"][0]["podSelector"]["matchLabels"]["strimzi.io/cluster"] == RELEASE
    # The test Pod is a labelled client of the API and reaches nothing else.
    test_pod = rendered.one("Pod", f"{RELEASE}-test-deposit")
    assert test_pod["metadata"]["labels"][f"{RELEASE}-client"] == "true"
    external = {m.name: m.doc["spec"] for m in render_scenario("external").of_kind("NetworkPolicy")}
    kafka_rule = next(r for r in external[f"{RELEASE}-api"]["egress"] if r["ports"][0]["port"] == 9092)
    assert "to" not in kafka_rule, "an external cluster is anywhere unless networkPolicy.kafka.to narrows it"
    assert not render_scenario("minimal").of_kind("NetworkPolicy")


def test_helm_test_hook_deposits_through_the_api_service_with_the_api_image():
    rendered = render_scenario("defaults")
    pod = rendered.one("Pod", f"{RELEASE}-test-deposit")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    api = containers(rendered.one("Deployment", f"{RELEASE}-api"))[0]
    container = containers(pod)[0]
    assert container["image"] == api["image"], "no extra image to pull"
    assert container["command"][:2] == ["python", "-c"] and "/deposit" in container["command"][2]
    assert env_of(container)["WALLET_API_URL"]["value"] == f"http://{RELEASE}-api.{NAMESPACE}.svc:8080"
    assert pod["spec"]["restartPolicy"] == "Never"
    compile(container["command"][2], "helm-test-deposit.py", "exec")  # the script is valid Python


def test_images_default_to_the_app_version_and_take_digests():
    chart_version = helm().Chart.load(str(CHART)).metadata["appVersion"]
    rendered = render_scenario("defaults")
    assert containers(rendered.one("Deployment", f"{RELEASE}-api"))[0]["image"] == f"wallet-api:{chart_version}"
    pinned = render_scenario("pinned")
    image = containers(pinned.one("StatefulSet", f"{RELEASE}-balance"))[0]["image"]
    assert image == "registry.example/wallet-balance@sha256:" + "b" * 64


def test_a_digest_wins_over_the_tag_for_every_image_the_operators_too():
    digest = {c: "sha256:" + c * 64 for c in "abcd"}
    rendered = render(
        {
            "global": {"imageRegistry": "registry.example.com/wallet"},
            "api": {"image": {"tag": "1.2.3", "digest": digest["a"]}},
            "balance": {"image": {"tag": "1.2.3", "digest": digest["b"]}},
            "aboveThreshold": {"image": {"digest": digest["c"]}},
            "operator": {
                "enabled": True,
                "image": {"repository": "wallet-operator", "tag": "9", "digest": digest["d"]},
            },
        }
    )
    images = {
        m.name: containers(m.doc)[0]["image"]
        for m in rendered.manifests
        if m.kind in ("Deployment", "StatefulSet", "Pod")
    }
    assert images == {
        f"{RELEASE}-api": f"registry.example.com/wallet/wallet-api@{digest['a']}",
        f"{RELEASE}-balance": f"registry.example.com/wallet/wallet-balance@{digest['b']}",
        f"{RELEASE}-above-threshold": f"registry.example.com/wallet/wallet-above-threshold@{digest['c']}",
        f"{RELEASE}-operator": f"registry.example.com/wallet/wallet-operator@{digest['d']}",
        f"{RELEASE}-test-deposit": f"registry.example.com/wallet/wallet-api@{digest['a']}",  # the API image
    }
    # Without its own repository the operator runs the API image, pinned as the API is.
    shared = render({"api": {"image": {"digest": digest["a"]}}, "operator": {"enabled": True}})
    assert containers(shared.one("Deployment", f"{RELEASE}-operator"))[0]["image"] == f"wallet-api@{digest['a']}"


@pytest.mark.parametrize(
    "digest", ["sha256:" + "A" * 64, "sha256:" + "a" * 63, "sha512:" + "a" * 64, "a" * 64, "sha256:" + "a" * 64 + "\n"]
)
@pytest.mark.parametrize("component", ["api", "balance", "aboveThreshold", "operator"])
def test_the_schema_accepts_only_sha256_digests(component, digest):
    with pytest.raises(helm().HelmValuesError, match=f"/{component}/image/digest"):
        render({component: {"image": {"digest": digest}}})


def test_what_make_images_pushes_is_what_the_chart_pulls_with_the_registry_alone():
    """`make images IMAGES_ARGS="push REG"` then `--set global.imageRegistry=REG`, as the README
    says: every image the chart renders was pushed (it pushed content tags only, and every pod
    would have sat in ImagePullBackOff)."""
    from walletkit.devstack.images import push_targets

    registry = "registry.example.com/wallet"
    rendered = render({"global": {"imageRegistry": registry}, "operator": {"enabled": True}})
    wanted = {
        c["image"]
        for m in rendered.manifests
        if m.kind in ("Deployment", "StatefulSet", "Pod")
        for c in containers(m.doc)
    }
    pushed = {
        target
        for image in ("wallet-api", "wallet-balance", "wallet-above-threshold")
        for target in push_targets(registry + "/", image, "0123456789ab")
    }
    assert wanted and wanted <= pushed, wanted - pushed
    assert f"{registry}/wallet-api:0123456789ab" in pushed  # and the build stays pinnable


def test_a_global_registry_prefixes_every_image_and_a_component_registry_wins():
    """What `helm install` needs after `make images IMAGES_ARGS="push REGISTRY"`: one value."""
    version = helm().Chart.load(str(CHART)).metadata["appVersion"]
    rendered = render(
        {
            "global": {"imageRegistry": "registry.example.com/wallet/"},
            "operator": {"enabled": True},
            "aboveThreshold": {"image": {"registry": "mirror.example:5000"}},
        }
    )
    images = {
        d.name: containers(d.doc)[0]["image"] for d in rendered.manifests if d.kind in ("Deployment", "StatefulSet")
    }
    assert images[f"{RELEASE}-api"] == f"registry.example.com/wallet/wallet-api:{version}"
    assert images[f"{RELEASE}-balance"] == f"registry.example.com/wallet/wallet-balance:{version}"
    assert images[f"{RELEASE}-above-threshold"] == f"mirror.example:5000/wallet-above-threshold:{version}"
    assert images[f"{RELEASE}-operator"] == images[f"{RELEASE}-api"], "the operator runs from the API image"


def test_the_httproute_attaches_to_the_named_gateway_or_the_releases_own():
    shared = render(
        {
            "api": {
                "httpRoute": {
                    "enabled": True,
                    "hostnames": ["wallet.example.com"],
                    "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
                }
            }
        }
    )
    route = shared.one("HTTPRoute", f"{RELEASE}-api")["spec"]
    assert route["parentRefs"] == [{"name": "public", "namespace": "gateways", "sectionName": "https"}]
    assert route["hostnames"] == ["wallet.example.com"]
    assert route["rules"] == [
        {
            "matches": [{"path": {"type": t, "value": v}} for t, v in PUBLIC_PATHS],
            "backendRefs": [{"name": f"{RELEASE}-api", "port": 8080}],
        }
    ], "only the public API, to the public port: no /metrics, /healthz or /readyz from outside"
    assert not [m for m in shared.manifests if m.kind == "Gateway"]
    own = render_scenario("gateway")
    gateway = own.one("Gateway", RELEASE)
    listeners = gateway["spec"]["listeners"]
    assert [(lis["name"], lis["protocol"], lis["port"]) for lis in listeners] == [
        ("http", "HTTP", 80),
        ("https", "HTTPS", 443),
    ]
    # cert-manager issues for the listener's hostname into the Secret the listener names.
    assert listeners[1]["hostname"] == "wallet.example.com"
    assert listeners[1]["tls"] == {"mode": "Terminate", "certificateRefs": [{"name": f"{RELEASE}-gateway-tls"}]}
    assert gateway["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    # The API only over HTTPS; plain HTTP is a redirect.
    assert own.one("HTTPRoute", f"{RELEASE}-api")["spec"]["parentRefs"] == [{"name": RELEASE, "sectionName": "https"}]
    redirect = own.one("HTTPRoute", f"{RELEASE}-api-https-redirect")["spec"]
    assert redirect["parentRefs"] == [{"name": RELEASE, "sectionName": "http"}]
    assert redirect["hostnames"] == ["wallet.example.com"]
    assert redirect["rules"] == [
        {"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}]}
    ]
    assert "through the Gateway" in own.notes and "BASE=https://wallet.example.com" in own.notes
    # Opting out of the redirect, or a TLS-less Gateway: one route on every listener, as before.
    route_on = {"api": {"httpRoute": {"enabled": True}}}
    both = render(
        {
            **route_on,
            "gateway": {
                "create": True,
                "tls": {"enabled": True, "redirectHttp": False, "certificateRefs": [{"name": "wallet-tls"}]},
            },
        }
    )
    assert both.one("HTTPRoute", f"{RELEASE}-api")["spec"]["parentRefs"] == [{"name": RELEASE}]
    assert both.one("Gateway", RELEASE)["spec"]["listeners"][1]["tls"]["certificateRefs"] == [{"name": "wallet-tls"}]
    assert len(both.of_kind("HTTPRoute")) == 1
    plain = render({**route_on, "gateway": {"create": True}})
    assert plain.one("HTTPRoute", f"{RELEASE}-api")["spec"]["parentRefs"] == [{"name": RELEASE}]
    assert "BASE=http://localhost:8080" in plain.notes
    # A shared Gateway is its owner's: parentRefs are taken as given, no redirect route is added.
    shared_tls = render(
        {
            "gateway": {"create": True, "tls": {"enabled": True, "certificateRefs": [{"name": "t"}]}},
            "api": {"httpRoute": {"enabled": True, "parentRefs": [{"name": "public", "sectionName": "https"}]}},
        }
    )
    assert [m.name for m in shared_tls.of_kind("HTTPRoute")] == [f"{RELEASE}-api"]
    with pytest.raises(Exception, match="names no Gateway"):
        render({"api": {"httpRoute": {"enabled": True}}})
    with pytest.raises(Exception, match="certificateRefs"):
        render({"gateway": {"create": True, "tls": {"enabled": True}}})


@pytest.mark.parametrize(
    "values,expected",
    [
        (
            {"gateway": {"create": True, "tls": {"enabled": True, "certManager": {"clusterIssuer": "le"}}}},
            "set gateway.tls.hostname",
        ),
        (
            {
                "gateway": {
                    "create": True,
                    "annotations": {"cert-manager.io/issuer": "ca"},
                    "tls": {"enabled": True, "certificateRefs": [{"name": "t"}]},
                }
            },
            "set gateway.tls.hostname",
        ),
        (
            {
                "gateway": {
                    "create": True,
                    "annotations": {"cert-manager.io/issuer": "ca"},
                    "tls": {"enabled": True, "hostname": "w.example.com", "certManager": {"issuer": "ca"}},
                }
            },
            "gateway.annotations sets cert-manager.io/issuer and gateway.tls.certManager names an issuer too",
        ),
        (
            {
                "gateway": {
                    "create": True,
                    "tls": {
                        "enabled": True,
                        "hostname": "a.example.com",
                        "certManager": {"clusterIssuer": "le", "issuer": "ca"},
                    },
                }
            },
            "gateway.tls.certManager: set clusterIssuer or issuer, not both",
        ),
        (
            {
                "gateway": {
                    "create": True,
                    "tls": {"enabled": True, "hostname": "a.example.com", "certificateRefs": [{"name": "t"}]},
                },
                "api": {"httpRoute": {"enabled": True, "hostnames": ["b.example.com"]}},
            },
            "would not attach to the HTTPS listener",
        ),
        ({"api": {"ingress": {"enabled": True, "certManager": {"clusterIssuer": "le"}}}}, "set api.ingress.host"),
        (
            {
                "api": {
                    "ingress": {
                        "enabled": True,
                        "host": "a.example.com",
                        "tls": [{"hosts": ["b.example.com"], "secretName": "s"}],
                    }
                }
            },
            "covers none of api.ingress.host",
        ),
        (
            {
                "api": {
                    "ingress": {
                        "enabled": True,
                        "host": "a.example.com",
                        "certManager": {"clusterIssuer": "le"},
                        "annotations": {"cert-manager.io/cluster-issuer": "other"},
                    }
                }
            },
            "keep one",
        ),
    ],
)
def test_tls_in_is_refused_where_it_could_not_work(values, expected):
    with pytest.raises(helm().HelmRenderError, match=expected):
        render(values)


def test_the_ingress_terminates_tls_with_the_certificate_cert_manager_issues():
    rendered = render_scenario("ingress-tls")
    ingress = rendered.one("Ingress", f"{RELEASE}-api")
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert ingress["spec"]["tls"] == [{"hosts": ["wallet.example.com"], "secretName": f"{RELEASE}-api-tls"}]
    assert ingress["spec"]["rules"][0]["host"] == "wallet.example.com"
    assert "BASE=https://wallet.example.com" in rendered.notes
    # TLS blocks of your own are taken as given (a wildcard covers the host), with a namespaced Issuer.
    own = render(
        {
            "api": {
                "ingress": {
                    "enabled": True,
                    "host": "wallet.example.com",
                    "certManager": {"issuer": "ca"},
                    "tls": [{"hosts": ["*.example.com"], "secretName": "wildcard-tls"}],
                }
            }
        }
    )
    ingress = own.one("Ingress", f"{RELEASE}-api")
    assert ingress["spec"]["tls"] == [{"hosts": ["*.example.com"], "secretName": "wildcard-tls"}]
    assert ingress["metadata"]["annotations"]["cert-manager.io/issuer"] == "ca"
    assert "cert-manager.io/cluster-issuer" not in ingress["metadata"]["annotations"]
    plain = render_scenario("ingress").one("Ingress", f"{RELEASE}-api")
    assert "tls" not in plain["spec"] and "annotations" not in plain["metadata"]


def test_monitoring_objects_follow_the_clusters_prometheus_operator_api_by_default():
    """auto: on where the cluster serves monitoring.coreos.com/v1 (tests/kube installs on such a
    server), off where it does not (this render, without that API), and true/false force it."""
    kinds = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert not [m for m in render_scenario("defaults").manifests if m.kind in kinds]
    forced = render({"metrics": {k: {"enabled": True} for k in ("serviceMonitor", "podMonitor", "prometheusRule")}})
    assert {m.kind for m in forced.manifests} >= kinds


def test_runbook_urls_are_absolute_links_to_each_alerts_section_when_published():
    base = "https://git.example.com/wallet/blob/v0.1.0/docs/observability.md"
    rule = render(
        {
            **SCENARIOS["monitoring"],
            "metrics": {
                **SCENARIOS["monitoring"]["metrics"],
                "prometheusRule": {"enabled": True, "runbookBaseUrl": base},
            },
        }
    ).one("PrometheusRule", RELEASE)
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert alerts
    for alert in alerts:
        url = alert["annotations"]["runbook_url"]
        assert url.startswith(base + "#runbook-"), url
        assert alert["annotations"]["runbook"].startswith("docs/observability.md" + url.removeprefix(base))
    with pytest.raises(Exception, match="runbookBaseUrl"):
        render({"metrics": {"prometheusRule": {"enabled": True, "runbookBaseUrl": "docs/observability.md"}}})


def test_long_release_names_still_make_valid_names():
    rendered = render(release="a-very-long-release-name-that-goes-on-and-on-x")
    for m in rendered.manifests:
        assert len(m.name) <= 63, f"{m.kind}/{m.name} is longer than a DNS label"
    sts = rendered.of_kind("StatefulSet")
    # A pod name is "<statefulset>-<ordinal>" and must stay a DNS label; keep room for two digits.
    assert all(len(s.name) + 3 <= 63 for s in sts)


def test_prometheus_rules_pass_promtool(tmp_path):
    """The rule group is valid PromQL and alerting syntax, as Prometheus itself parses it."""
    yaml = require_module("yaml", "pip install -c constraints.txt -r requirements/chart.txt")
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (Debian package prometheus)")
    rule = render_scenario("monitoring").one("PrometheusRule", RELEASE)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"SUCCESS: (\d+) rules found", result.stdout)
    assert found and int(found.group(1)) >= 2, result.stdout


# ---------------------------------------------------------------- durability


def test_defaults_cannot_lose_an_acknowledged_deposit():
    rendered = render()
    (pool,) = rendered.of_kind("KafkaNodePool")
    assert pool.doc["spec"]["replicas"] == 3
    (kafka,) = rendered.of_kind("Kafka")
    config = kafka.doc["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3 and config["min.insync.replicas"] == 2
    assert config["offsets.topic.replication.factor"] == 3 and config["transaction.state.log.replication.factor"] == 3
    assert config["transaction.state.log.min.isr"] == 2
    assert config["unclean.leader.election.enable"] is False and config["auto.create.topics.enable"] is False
    topics = rendered.of_kind("KafkaTopic")
    assert len(topics) == 4  # deposit, the two tables, table-versions
    for topic in topics:
        spec = topic.doc["spec"]
        assert spec["replicas"] == 3, spec
        assert spec["config"]["min.insync.replicas"] == 2 and spec["config"]["unclean.leader.election.enable"] is False
    # Topics the services create themselves (an external cluster) get the same.
    env = env_of(containers(rendered.one("StatefulSet", f"{RELEASE}-balance"))[-1])
    assert env["WALLET_REPLICATION_FACTOR"]["value"] == "3" and env["WALLET_MIN_INSYNC_REPLICAS"]["value"] == "2"


@pytest.mark.parametrize(
    "values,named",
    [
        ({"kafka": {"strimzi": {"nodePool": {"replicas": 1}}}}, "kafka.strimzi.nodePool.replicas is 1"),
        ({"kafka": {"topics": {"replicas": 2}}}, "kafka.topics.replicas is 2"),
        ({"kafka": {"topics": {"replicas": -1}}}, "kafka.topics.replicas is -1"),
        ({"kafka": {"topics": {"minInsyncReplicas": 1}}}, "kafka.topics.minInsyncReplicas is 1"),
        (
            {"kafka": {"topics": {"tableConfig": {"unclean.leader.election.enable": True}}}},
            "kafka.topics.tableConfig enables unclean leader election",
        ),
        (
            {"kafka": {"topics": {"depositConfig": {"min.insync.replicas": 1}}}},
            "kafka.topics.depositConfig sets min.insync.replicas 1",
        ),
        ({"kafka": {"strimzi": {"config": {"default.replication.factor": 1}}}}, "default.replication.factor is 1"),
        (
            {"kafka": {"strimzi": {"config": {"transaction.state.log.min.isr": 1}}}},
            "transaction.state.log.min.isr is 1",
        ),
        (
            {"kafka": {"strimzi": {"config": {"unclean.leader.election.enable": True}}}},
            "enables unclean.leader.election.enable",
        ),
        ({"kafka": {"strimzi": {"config": {"auto.create.topics.enable": True}}}}, "auto.create.topics.enable: false"),
        ({"kafka": {"strimzi": {"config": {"auto.create.topics.enable": None}}}}, "auto.create.topics.enable: false"),
    ],
)
def test_an_unsafe_kafka_setting_is_refused_unless_explicitly_allowed(values, named):
    h = helm()
    with pytest.raises(h.HelmRenderError) as failure:
        render(values)
    message = str(failure.value)
    assert "can lose acknowledged deposits" in message and named in message, message
    assert "kafka.durability.allowUnsafe=true" in message
    opted_in = json.loads(json.dumps(values))
    opted_in["kafka"]["durability"] = {"allowUnsafe": True}
    render(opted_in)  # the same values render once the risk is accepted


def test_a_min_insync_above_the_replicas_is_refused_even_when_unsafe_is_allowed():
    h = helm()
    with pytest.raises(h.HelmRenderError, match=r"minInsyncReplicas \(3\) is above kafka.topics.replicas \(2\)"):
        render({"kafka": {"durability": {"allowUnsafe": True}, "topics": {"replicas": 2, "minInsyncReplicas": 3}}})


def test_the_kind_values_file_opts_in_to_one_broker():
    yaml = require_module("yaml", "pip install -c constraints.txt -r requirements/chart.txt")
    values = yaml.safe_load((CHART / "values-kind.yaml").read_text())
    rendered = render(values)
    (pool,) = rendered.of_kind("KafkaNodePool")
    assert pool.doc["spec"]["replicas"] == 1
    assert all(t.doc["spec"]["replicas"] == 1 for t in rendered.of_kind("KafkaTopic"))
    values["kafka"]["durability"]["allowUnsafe"] = False
    with pytest.raises(helm().HelmRenderError, match="can lose acknowledged deposits"):
        render(values)


# ---------------------------------------------------------------- authentication and rate limits


def api_env(rendered):
    return env_of(containers(rendered.one("Deployment", f"{RELEASE}-api"))[0])


def test_authentication_is_off_by_default_and_said_so_explicitly():
    env = api_env(render_scenario("defaults"))
    # WALLET_AUTH=none, not absent: the API refuses WALLET_AUTH_* variables without WALLET_AUTH.
    assert env["WALLET_AUTH"]["value"] == "none"
    assert not [n for n in env if n.startswith("WALLET_AUTH_")]
    assert (env["WALLET_RATE_LIMIT_RPS"]["value"], env["WALLET_RATE_LIMIT_BURST"]["value"]) == ("0", "0")


def test_authentication_with_a_jwks_url_wires_every_setting_and_lets_the_api_reach_the_issuer():
    rendered = render_scenario("auth-jwks-url")
    env = {
        name: item["value"]
        for name, item in api_env(rendered).items()
        if name.startswith(("WALLET_AUTH", "WALLET_RATE_LIMIT"))
    }
    assert env == {
        "WALLET_AUTH": "jwt",
        "WALLET_AUTH_ISSUER": "https://id.example.com/realms/wallet",
        "WALLET_AUTH_AUDIENCE": "wallet-api",
        "WALLET_AUTH_JWKS_URL": "https://id.example.com/realms/wallet/protocol/openid-connect/certs",
        "WALLET_AUTH_ALGORITHMS": "RS256,PS256",
        "WALLET_AUTH_LEEWAY_SECONDS": "10",
        "WALLET_AUTH_DEPOSIT_SCOPE": "wallet:deposit",
        "WALLET_AUTH_READ_SCOPE": "wallet:read",
        "WALLET_AUTH_WALLETS_CLAIM": "wallets",
        "WALLET_RATE_LIMIT_RPS": "20",
        "WALLET_RATE_LIMIT_BURST": "40",
    }
    api = rendered.one("Deployment", f"{RELEASE}-api")
    assert not [v for v in pod_spec(api)["volumes"] if v["name"] == "auth-jwks"], "keys from the URL: no file"
    egress = rendered.one("NetworkPolicy", f"{RELEASE}-api")["spec"]["egress"]
    assert egress[-1] == {"ports": [{"port": 443, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}
    own_port = render(
        {
            "api": {
                "auth": {"enabled": True, "issuer": "i", "audience": "a", "jwksUrl": "https://keys.example:8443/jwks"}
            }
        }
    )
    assert own_port.one("NetworkPolicy", f"{RELEASE}-api")["spec"]["egress"][-1] == {
        "ports": [{"port": 8443, "protocol": "TCP"}]
    }, "the URL's own port, to anywhere unless networkPolicy.jwks.to"
    processors = rendered.one("NetworkPolicy", f"{RELEASE}-processors")["spec"]["egress"]
    assert not [r for r in processors if r["ports"][0]["port"] == 443], "only the API fetches keys"


def test_authentication_with_a_jwks_file_mounts_it_read_only():
    rendered = render_scenario("auth-jwks-file")
    api = rendered.one("Deployment", f"{RELEASE}-api")
    container = containers(api)[0]
    env = env_of(container)
    assert "WALLET_AUTH_JWKS_URL" not in env
    path = env["WALLET_AUTH_JWKS_FILE"]["value"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "auth-jwks")
    assert mount["readOnly"] is True and path == mount["mountPath"] + "/jwks.json"
    volume = next(v for v in pod_spec(api)["volumes"] if v["name"] == "auth-jwks")
    assert volume == {
        "name": "auth-jwks",
        "configMap": {"name": "wallet-issuer-keys", "items": [{"key": "keys.json", "path": "jwks.json"}]},
    }
    assert (
        env["WALLET_AUTH_DEPOSIT_SCOPE"]["value"],
        env["WALLET_AUTH_READ_SCOPE"]["value"],
        env["WALLET_AUTH_WALLETS_CLAIM"]["value"],
    ) == ("payments:write", "payments:read", "accounts")
    egress = rendered.one("NetworkPolicy", f"{RELEASE}-api")["spec"]["egress"]
    assert not [r for r in egress if r["ports"][0]["port"] == 443], "keys from a file: no egress to an issuer"
    secret = render({"api": {"auth": {"enabled": True, "issuer": "i", "audience": "a", "jwks": {"secret": "keys"}}}})
    volume = next(
        v for v in pod_spec(secret.one("Deployment", f"{RELEASE}-api"))["volumes"] if v["name"] == "auth-jwks"
    )
    assert volume["secret"] == {"secretName": "keys", "items": [{"key": "jwks.json", "path": "jwks.json"}]}


def test_the_helm_test_knows_whether_the_api_wants_a_token():
    plain = containers(render_scenario("defaults").one("Pod", f"{RELEASE}-test-deposit"))[0]
    assert env_of(plain)["WALLET_TEST_AUTH"]["value"] == "none" and "WALLET_TEST_TOKEN_FILE" not in env_of(plain)
    no_token = render_scenario("auth-jwks-url").one("Pod", f"{RELEASE}-test-deposit")
    assert env_of(containers(no_token)[0])["WALLET_TEST_AUTH"]["value"] == "jwt"
    assert "WALLET_TEST_TOKEN_FILE" not in env_of(containers(no_token)[0])
    pod = render_scenario("auth-jwks-file").one("Pod", f"{RELEASE}-test-deposit")
    container = containers(pod)[0]
    path = env_of(container)["WALLET_TEST_TOKEN_FILE"]["value"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "token")
    assert mount["readOnly"] and path == mount["mountPath"] + "/token"
    assert next(v for v in pod["spec"]["volumes"] if v["name"] == "token")["secret"] == {
        "secretName": "wallet-helm-test-token",
        "defaultMode": 0o440,
        "items": [{"key": "token", "path": "token"}],
    }


@pytest.mark.parametrize(
    "auth,expected",
    [
        ({}, r"api.auth.enabled needs api.auth.issuer"),
        ({"issuer": "https://id.example.com"}, r"api.auth.enabled needs api.auth.audience"),
        ({"issuer": "https://id.example.com", "audience": "  "}, r"needs api.auth.audience"),
        ({"issuer": "i", "audience": "a"}, r"exactly one source of the issuer's keys.*\(none is set\)"),
        (
            {"issuer": "i", "audience": "a", "jwksUrl": "https://k.example/jwks", "jwks": {"secret": "keys"}},
            r"api.auth.jwksUrl and api.auth.jwks.secret are set together",
        ),
        (
            {"issuer": "i", "audience": "a", "jwks": {"secret": "keys", "configMap": "keys"}},
            r"api.auth.jwks.configMap and api.auth.jwks.secret are set together",
        ),
    ],
)
def test_enabled_authentication_needs_issuer_audience_and_exactly_one_key_source(auth, expected):
    with pytest.raises(helm().HelmRenderError, match=expected):
        render({"api": {"auth": {"enabled": True, **auth}}})


@pytest.mark.parametrize(
    "values,path",
    [
        ({"api": {"auth": {"jwksUrl": "http://id.example.com/jwks"}}}, "/api/auth/jwksUrl"),
        ({"api": {"auth": {"algorithms": ["HS256"]}}}, "/api/auth/algorithms"),
        ({"api": {"auth": {"algorithms": []}}}, "/api/auth/algorithms"),
        ({"api": {"auth": {"leewaySeconds": 301}}}, "/api/auth/leewaySeconds"),
        ({"api": {"auth": {"scopes": {"read": "wallet read"}}}}, "/api/auth/scopes/read"),
        ({"api": {"rateLimit": {"requestsPerSecond": -1}}}, "/api/rateLimit/requestsPerSecond"),
        ({"api": {"rateLimit": {"burst": 1.5}}}, "/api/rateLimit/burst"),
    ],
)
def test_the_schema_refuses_auth_values_the_api_would_refuse(values, path):
    with pytest.raises(helm().HelmValuesError, match=path):
        render(values)
    # Loopback http is the one exception (a sidecar in the pod serving the keys).
    render(
        {"api": {"auth": {"enabled": True, "issuer": "i", "audience": "a", "jwksUrl": "http://127.0.0.1:8089/jwks"}}}
    )


class _StubApi:
    """A loopback stand-in for the API: 401 without the right bearer token (unless ``enforce`` is
    false: an API that ignores WALLET_AUTH), else the HTTP contract."""

    def __init__(self, token, *, enforce=True):
        import http.server
        import threading

        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, body):
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def authorized(self):
                return not stub.enforce or (
                    stub.token is not None and self.headers.get("Authorization") == f"Bearer {stub.token}"
                )

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not self.authorized():
                    return self.reply(401, '{"error":"no token"}')
                stub.wallets.add(body["WalletID"])
                self.reply(202, '{"accepted":true}')

            def do_GET(self):
                wallet = self.path.removeprefix("/details/")
                if not self.authorized():
                    return self.reply(401, '{"error":"no token"}')
                if wallet not in stub.wallets:
                    return self.reply(404, '{"error":"unknown wallet"}')
                self.reply(
                    200,
                    json.dumps({"WalletID": wallet, "Balance": 8000, "AboveThreshold": False}, separators=(",", ":")),
                )

        self.token, self.enforce, self.wallets = token, enforce, set()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("with_token", [False, True])
def test_the_helm_test_script_checks_authentication_and_deposits_with_its_token(tmp_path, with_token):
    import sys

    script = containers(render_scenario("auth-jwks-file").one("Pod", f"{RELEASE}-test-deposit"))[0]["command"][2]
    stub = _StubApi("good-token" if with_token else None)
    env = {"WALLET_API_URL": stub.url, "WALLET_TEST_TIMEOUT_SECONDS": "10", "WALLET_TEST_AUTH": "jwt"}
    if with_token:
        (tmp_path / "token").write_text("good-token\n")
        env["WALLET_TEST_TOKEN_FILE"] = str(tmp_path / "token")
    try:
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30)
    finally:
        stub.close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "requests without a token are refused (401)" in result.stdout
    if with_token:
        assert "read back" in result.stdout and len(stub.wallets) == 1
    else:
        assert "was not checked" in result.stdout and not stub.wallets


def test_the_helm_test_script_fails_when_authentication_is_on_but_not_enforced(tmp_path):
    import sys

    script = containers(render_scenario("auth-jwks-file").one("Pod", f"{RELEASE}-test-deposit"))[0]["command"][2]
    stub = _StubApi(None, enforce=False)
    try:
        env = {"WALLET_API_URL": stub.url, "WALLET_TEST_TIMEOUT_SECONDS": "5", "WALLET_TEST_AUTH": "jwt"}
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30)
    finally:
        stub.close()
    assert result.returncode != 0 and "not [401, 401]" in result.stderr, result.stdout + result.stderr
