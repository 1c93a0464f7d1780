"""Every rendered manifest is valid: Kubernetes kinds against the Kubernetes schemas (strict, i.e.
unknown fields are errors), Strimzi and prometheus-operator resources against their CRDs."""

from __future__ import annotations

import copy

import pytest
from chart_support import (
    KUBE_VERSIONS,
    RELEASE,
    SCENARIOS,
    load_crds,
    render_scenario,
    require_module,
    validate_custom_resource,
)

CUSTOM_GROUPS = ("kafka.strimzi.io/", "monitoring.coreos.com/", "scaling.wallet.dev/", "gateway.networking.k8s.io/")


def kubernetes_validate():
    return require_module("kubernetes_validate", "pip install -c constraints.txt -r requirements/chart.txt")


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_kubernetes_objects_match_the_kubernetes_schemas(scenario):
    kv = kubernetes_validate()
    checked = 0
    failures = []
    for m in render_scenario(scenario).manifests:
        if m.doc["apiVersion"].startswith(CUSTOM_GROUPS):
            continue
        for version in KUBE_VERSIONS:
            try:
                kv.validate(m.doc, version, strict=True)
            except kv.ValidationError as exc:
                failures.append(f"{m.kind}/{m.name} (Kubernetes {version}): {exc}")
            checked += 1
    assert checked >= 6 * len(KUBE_VERSIONS), (
        f"only {checked} validations: did rendering lose objects?"
    )  # 3 workloads + 3 Services at least
    assert not failures, "\n".join(failures)


def test_kubernetes_validation_rejects_a_broken_object():
    kv = kubernetes_validate()
    deployment = copy.deepcopy(render_scenario("defaults").one("Deployment", f"{RELEASE}-api"))
    kv.validate(deployment, KUBE_VERSIONS[-1], strict=True)  # valid as rendered
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {"path": "/healthz"}
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, KUBE_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_custom_resources_match_their_crds(scenario):
    rendered = render_scenario(scenario)
    custom = [m for m in rendered.manifests if m.doc["apiVersion"].startswith(CUSTOM_GROUPS)]
    failures = {f"{m.kind}/{m.name}": errs for m in custom if (errs := validate_custom_resource(m.doc))}
    assert not failures, failures
    kinds = {m.kind for m in custom}
    if scenario in ("defaults", "strimzi-tls-scram", "monitoring", "hpa-scaled", "pinned", "minimal"):
        assert {"Kafka", "KafkaNodePool", "KafkaTopic"} <= kinds
    if scenario == "strimzi-tls-scram":
        assert "KafkaUser" in kinds
    if scenario == "monitoring":
        assert {"ServiceMonitor", "PodMonitor", "PrometheusRule"} <= kinds


def test_every_custom_kind_the_chart_can_render_has_a_crd():
    crds = load_crds()
    rendered = set()
    for scenario in SCENARIOS:
        rendered |= {
            (m.doc["apiVersion"], m.kind)
            for m in render_scenario(scenario).manifests
            if m.doc["apiVersion"].startswith(CUSTOM_GROUPS)
        }
    assert rendered == {
        ("kafka.strimzi.io/v1", "Kafka"),
        ("kafka.strimzi.io/v1", "KafkaNodePool"),
        ("kafka.strimzi.io/v1", "KafkaTopic"),
        ("kafka.strimzi.io/v1", "KafkaUser"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PodMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
        ("scaling.wallet.dev/v1alpha1", "ProcessorScaler"),
        ("gateway.networking.k8s.io/v1", "Gateway"),
        ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    }
    assert rendered <= set(crds)


def _broken(kind, name, scenario, mutate):
    doc = copy.deepcopy(render_scenario(scenario).one(kind, name))
    assert validate_custom_resource(doc) == [], "the unbroken resource must pass first"
    mutate(doc)
    return validate_custom_resource(doc)


def test_crd_validation_rejects_deliberately_broken_resources():
    def bad_partitions(doc):
        doc["spec"]["partitions"] = "eight"

    errors = _broken("KafkaTopic", f"{RELEASE}-deposit", "defaults", bad_partitions)
    assert any(e.startswith("spec.partitions") and "integer" in e for e in errors), errors

    def typo(doc):  # an unknown field would be pruned silently by the API server: a typo that does nothing
        doc["spec"]["partitionz"] = 8

    errors = _broken("KafkaTopic", f"{RELEASE}-deposit", "defaults", typo)
    assert any("partitionz" in e for e in errors), errors

    def no_roles(doc):
        del doc["spec"]["roles"]

    errors = _broken("KafkaNodePool", "dual-role", "defaults", no_roles)
    assert any("'roles' is a required property" in e for e in errors), errors

    def bad_listener(doc):
        doc["spec"]["kafka"]["listeners"][0]["name"] = "plain_listener"
        doc["spec"]["kafka"]["listeners"][1]["type"] = "internet"

    errors = _broken("Kafka", RELEASE, "defaults", bad_listener)
    assert any("listeners.0.name" in e for e in errors) and any("listeners.1.type" in e for e in errors), errors

    def bad_acl(doc):
        doc["spec"]["authorization"]["acls"][0]["operations"] = ["Scribble"]

    errors = _broken("KafkaUser", f"{RELEASE}-api", "strimzi-tls-scram", bad_acl)
    assert any("Scribble" in e for e in errors), errors

    def old_api(doc):
        doc["apiVersion"] = "kafka.strimzi.io/v1beta2"

    errors = _broken("KafkaTopic", f"{RELEASE}-deposit", "defaults", old_api)
    assert errors, "v1beta2 is not in the shipped CRDs"

    def bad_endpoint(doc):
        doc["spec"]["endpoints"][0]["interval"] = "thirty seconds"

    errors = _broken("ServiceMonitor", f"{RELEASE}-api", "monitoring", bad_endpoint)
    assert any("endpoints.0.interval" in e for e in errors), errors

    def bad_name(doc):
        doc["metadata"]["name"] = "above_threshold-table"

    errors = _broken("KafkaTopic", f"{RELEASE}-deposit", "defaults", bad_name)
    assert any("DNS-1123" in e for e in errors), errors
