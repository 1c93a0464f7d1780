{{/* ---------------------------------------------------------------- names */}}

{{/* The chart name, or nameOverride. */}}
{{- define "wallet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The release's full name, the prefix of every resource name. Kept to 38 characters so that the
longest derived name, the Service "<fullname>-above-threshold-headless" (25 more), still fits a
63-character DNS label, and so do Strimzi's names built on the Kafka cluster name.
*/}}
{{- define "wallet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 38 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 38 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 38 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* name-version, for the helm.sh/chart label. */}}
{{- define "wallet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of one component's resources: <fullname>-<component>. Call with (dict "root" $ "component" "api"). */}}
{{- define "wallet.componentName" -}}
{{- printf "%s-%s" (include "wallet.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The ServiceAccount the pods run as. */}}
{{- define "wallet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "wallet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Label whose pods the API's NetworkPolicy admits as clients (the helm test Pod carries it). */}}
{{- define "wallet.clientLabel" -}}
{{- printf "%s-client" (include "wallet.fullname" .) -}}
{{- end -}}

{{/* ---------------------------------------------------------------- labels */}}

{{/* Selector labels of every pod of the release (the default-deny NetworkPolicy selects these). */}}
{{- define "wallet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wallet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "wallet.labels" -}}
helm.sh/chart: {{ include "wallet.chart" . }}
{{ include "wallet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: wallet
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component. Call with (dict "root" $ "component" "api"). */}}
{{- define "wallet.componentSelectorLabels" -}}
{{ include "wallet.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of one component's resources. Call with (dict "root" $ "component" "api"). */}}
{{- define "wallet.componentLabels" -}}
{{ include "wallet.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
metadata.annotations (commonAnnotations plus extra ones), already indented for metadata, or
nothing. Call as {{- include "wallet.annotations" (dict "root" $ "extra" (dict ...)) }}.
*/}}
{{- define "wallet.annotations" -}}
{{- $all := merge (dict) (get . "extra" | default dict) .root.Values.commonAnnotations -}}
{{- if $all }}
  annotations:
    {{- toYaml $all | nindent 4 }}
{{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------- components */}}

{{/*
The two processors, as JSON: where their values live, their resource-name component, and the
Kafka names (contracts of DESIGN.md) their ACLs need.
*/}}
{{- define "wallet.processors" -}}
[{"key": "balance", "component": "balance", "script": "wallet-balance", "group": "balance", "table": "balance-table"},
 {"key": "aboveThreshold", "component": "above-threshold", "script": "wallet-above-threshold", "group": "above_threshold", "table": "above_threshold-table"}]
{{- end -}}

{{/*
The public API's paths, as JSON: what the HTTPRoute and the Ingress route (to port http). Exact
where the API has one resource, a prefix for /details/{wallet_id}. /metrics, /healthz and /readyz
are not among them: they are served on port ops only.
*/}}
{{- define "wallet.api.publicPaths" -}}
[{"type": "Exact", "path": "/deposit"},
 {"type": "PathPrefix", "path": "/details/"},
 {"type": "Exact", "path": "/openapi.yaml"},
 {"type": "Exact", "path": "/openapi.json"}]
{{- end -}}

{{/* ---------------------------------------------------------------- API authentication */}}

{{/* Where the JWKS document is mounted (file jwks.json), read through WALLET_AUTH_JWKS_FILE. */}}
{{- define "wallet.api.jwksDir" -}}/etc/wallet/auth{{- end -}}

{{/* The JWKS volume's source (configMap or secret), or nothing when the keys come from a URL. */}}
{{- define "wallet.api.jwksVolume" -}}
{{- $auth := .Values.api.auth -}}
{{- if $auth.enabled -}}
{{- $items := list (dict "key" $auth.jwks.key "path" "jwks.json") -}}
{{- if $auth.jwks.configMap -}}
{{- toYaml (dict "configMap" (dict "name" $auth.jwks.configMap "items" $items)) -}}
{{- else if $auth.jwks.secret -}}
{{- toYaml (dict "secret" (dict "secretName" $auth.jwks.secret "items" $items)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The API's WALLET_AUTH* variables. WALLET_AUTH is always set, so the API's own guard (auth
variables without WALLET_AUTH are refused) never meets a half-configured pod. */}}
{{- define "wallet.api.authEnv" -}}
{{- $auth := .Values.api.auth -}}
- name: WALLET_AUTH
  value: {{ ternary "jwt" "none" $auth.enabled | quote }}
{{- if $auth.enabled }}
- name: WALLET_AUTH_ISSUER
  value: {{ $auth.issuer | quote }}
- name: WALLET_AUTH_AUDIENCE
  value: {{ $auth.audience | quote }}
{{- if $auth.jwksUrl }}
- name: WALLET_AUTH_JWKS_URL
  value: {{ $auth.jwksUrl | quote }}
{{- else }}
- name: WALLET_AUTH_JWKS_FILE
  value: {{ printf "%s/jwks.json" (include "wallet.api.jwksDir" .) | quote }}
{{- end }}
- name: WALLET_AUTH_ALGORITHMS
  value: {{ join "," $auth.algorithms | quote }}
- name: WALLET_AUTH_LEEWAY_SECONDS
  value: {{ $auth.leewaySeconds | int64 | quote }}
- name: WALLET_AUTH_DEPOSIT_SCOPE
  value: {{ $auth.scopes.deposit | quote }}
- name: WALLET_AUTH_READ_SCOPE
  value: {{ $auth.scopes.read | quote }}
- name: WALLET_AUTH_WALLETS_CLAIM
  value: {{ $auth.walletsClaim | quote }}
{{- end }}
{{- end -}}

{{/* The port of api.auth.jwksUrl (its own, or the scheme's), for the API's egress rule. */}}
{{- define "wallet.api.jwksPort" -}}
{{- $url := urlParse .Values.api.auth.jwksUrl -}}
{{- $port := regexFind "[0-9]+$" (regexFind ":[0-9]+$" $url.host) -}}
{{- default (ternary "443" "80" (eq $url.scheme "https")) $port -}}
{{- end -}}

{{/* image reference of a component. Call with (dict "root" $ "image" .Values.api.image). */}}
{{- define "wallet.image" -}}
{{- $registry := default ((.root.Values.global).imageRegistry) .image.registry | trimSuffix "/" -}}
{{- $repository := ternary (printf "%s/%s" $registry .image.repository) .image.repository (ne $registry "") -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------- Kafka */}}

{{- define "wallet.kafka.clusterName" -}}
{{- default (include "wallet.fullname" .) .Values.kafka.strimzi.clusterName | trunc 38 | trimSuffix "-" -}}
{{- end -}}

{{/* Bootstrap address the services use: Strimzi's bootstrap Service (TLS listener with kafka.tls.enabled) or the external one. */}}
{{- define "wallet.kafka.bootstrapServers" -}}
{{- if .Values.kafka.strimzi.enabled -}}
{{- printf "%s-kafka-bootstrap.%s.svc:%d" (include "wallet.kafka.clusterName" .) .Release.Namespace (ternary 9093 9092 .Values.kafka.tls.enabled) -}}
{{- else -}}
{{- .Values.kafka.external.bootstrapServers -}}
{{- end -}}
{{- end -}}

{{/* Strimzi owns the topics (KafkaTopic) when it runs the cluster; otherwise the services may create them. */}}
{{- define "wallet.kafka.createTopics" -}}
{{- if .Values.kafka.strimzi.enabled -}}false{{- else -}}{{ .Values.kafka.external.createTopics }}{{- end -}}
{{- end -}}

{{/* Name of a component's KafkaUser, which is also its SASL username and the name of the Secret Strimzi writes its password to. */}}
{{- define "wallet.kafka.userName" -}}
{{- include "wallet.componentName" . -}}
{{- end -}}

{{/* Secret and key of the CA that signed the brokers' certificates ("" when none is configured). */}}
{{- define "wallet.kafka.caSecretName" -}}
{{- if .Values.kafka.tls.enabled -}}
{{- if .Values.kafka.strimzi.enabled -}}
{{- printf "%s-cluster-ca-cert" (include "wallet.kafka.clusterName" .) -}}
{{- else -}}
{{- .Values.kafka.external.tls.caSecret.name -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "wallet.kafka.caSecretKey" -}}
{{- if .Values.kafka.strimzi.enabled -}}ca.crt{{- else -}}{{ .Values.kafka.external.tls.caSecret.key }}{{- end -}}
{{- end -}}

{{/* Where the CA certificate is mounted in the containers. */}}
{{- define "wallet.kafka.caDir" -}}/etc/wallet/kafka-ca{{- end -}}

{{/* Where the SASL password is mounted (file "password"), read through KAFKA_SASL_PASSWORD_FILE. */}}
{{- define "wallet.kafka.saslDir" -}}/etc/wallet/kafka-sasl{{- end -}}

{{/*
"true" when a component reads its SASL password from a mounted file rather than the environment,
where a password would show in `kubectl describe`-style dumps, crash reports and /proc/<pid>/environ.
The three services resolve KAFKA_SASL_PASSWORD_FILE (walletkit.service.settings); wallet-operator
reads the KAFKA_* variables itself and takes the password from the environment still.
Call with (dict "root" $ "component" "api").
*/}}
{{- define "wallet.kafka.saslPasswordFile" -}}
{{- if and .root.Values.kafka.sasl.enabled (ne .component "operator") -}}true{{- end -}}
{{- end -}}

{{/* Secret and key holding a component's SASL password: Strimzi's user Secret, or the one named. */}}
{{- define "wallet.kafka.saslSecretName" -}}
{{- if .root.Values.kafka.strimzi.enabled -}}
{{- include "wallet.kafka.userName" . -}}
{{- else -}}
{{- .root.Values.kafka.external.sasl.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "wallet.kafka.saslPasswordKey" -}}
{{- if .root.Values.kafka.strimzi.enabled -}}password{{- else -}}{{ .root.Values.kafka.external.sasl.passwordKey }}{{- end -}}
{{- end -}}

{{/*
Environment every service shares: where Kafka is, how to talk to it, where state goes.
Call with (dict "root" $ "component" "api" "port" 8080).
*/}}
{{- define "wallet.commonEnv" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ include "wallet.kafka.bootstrapServers" $root | quote }}
- name: WALLET_PARTITIONS
  value: {{ $v.kafka.topics.partitions | int64 | quote }}
- name: WALLET_REPLICATION_FACTOR
  value: {{ $v.kafka.topics.replicas | int64 | quote }}
- name: WALLET_MIN_INSYNC_REPLICAS
  value: {{ $v.kafka.topics.minInsyncReplicas | int64 | quote }}
- name: WALLET_CREATE_TOPICS
  value: {{ include "wallet.kafka.createTopics" $root | quote }}
- name: WALLET_STATE_DIR
  value: /var/lib/wallet
- name: WALLET_HTTP_PORT
  value: {{ .port | int64 | quote }}
- name: WALLET_LOG_LEVEL
  value: {{ $v.logLevel | quote }}
{{- with $v.kafka.extraClientConfig }}
- name: KAFKA_CONFIG
  value: {{ . | quote }}
{{- end }}
{{- if or $v.kafka.tls.enabled $v.kafka.sasl.enabled }}
- name: KAFKA_SECURITY_PROTOCOL
  value: {{ printf "%s%s" (ternary "SASL_" "" $v.kafka.sasl.enabled) (ternary "SSL" "PLAINTEXT" $v.kafka.tls.enabled) | quote }}
{{- end }}
{{- if include "wallet.kafka.caSecretName" $root }}
- name: KAFKA_SSL_CA_LOCATION
  value: {{ printf "%s/ca.crt" (include "wallet.kafka.caDir" $root) | quote }}
{{- end }}
{{- if $v.kafka.sasl.enabled }}
{{- if $v.kafka.strimzi.enabled }}
- name: KAFKA_SASL_MECHANISM
  value: SCRAM-SHA-512
- name: KAFKA_SASL_USERNAME
  value: {{ include "wallet.kafka.userName" . | quote }}
{{- else }}
- name: KAFKA_SASL_MECHANISM
  value: {{ $v.kafka.sasl.mechanism | quote }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $v.kafka.external.sasl.existingSecret }}
      key: {{ $v.kafka.external.sasl.usernameKey }}
{{- end }}
{{- if include "wallet.kafka.saslPasswordFile" . }}
# The password as a file of the mounted Secret (wallet.volumes), never in the environment.
- name: KAFKA_SASL_PASSWORD_FILE
  value: {{ printf "%s/password" (include "wallet.kafka.saslDir" $root) | quote }}
{{- else }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      # Strimzi: written by the User Operator for the component's KafkaUser.
      name: {{ include "wallet.kafka.saslSecretName" . }}
      key: {{ include "wallet.kafka.saslPasswordKey" . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Volume mounts of the Kafka client files: the CA when TLS is on, the SASL password when it is
read from a file. Call with (dict "root" $ "component" "api"). */}}
{{- define "wallet.kafka.volumeMounts" -}}
{{- if include "wallet.kafka.caSecretName" .root }}
- name: kafka-ca
  mountPath: {{ include "wallet.kafka.caDir" .root }}
  readOnly: true
{{- end }}
{{- if include "wallet.kafka.saslPasswordFile" . }}
- name: kafka-sasl
  mountPath: {{ include "wallet.kafka.saslDir" .root }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* Volume mounts every service container has: its state, /tmp, and the Kafka client files.
Call with (dict "root" $ "component" "api"). */}}
{{- define "wallet.volumeMounts" -}}
- name: state
  mountPath: /var/lib/wallet
- name: tmp
  mountPath: /tmp
{{- include "wallet.kafka.volumeMounts" . }}
{{- end -}}

{{/* Pod volumes every service has besides its state volume. Call with (dict "root" $ "component" "api"). */}}
{{- define "wallet.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .root.Values.tmpVolumeSizeLimit }}
{{- with include "wallet.kafka.caSecretName" .root }}
- name: kafka-ca
  secret:
    secretName: {{ . }}
    items:
      - key: {{ include "wallet.kafka.caSecretKey" $.root }}
        path: ca.crt
{{- end }}
{{- if include "wallet.kafka.saslPasswordFile" . }}
# Only the password key, readable by the pod's group (fsGroup) and nobody else.
- name: kafka-sasl
  secret:
    secretName: {{ include "wallet.kafka.saslSecretName" . }}
    defaultMode: 0440
    items:
      - key: {{ include "wallet.kafka.saslPasswordKey" . }}
        path: password
{{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------- checks */}}

{{/* Fail rendering with a clear message on values the schema cannot judge alone. */}}
{{- define "wallet.validateValues" -}}
{{- $v := .Values -}}
{{- $partitions := int $v.kafka.topics.partitions -}}
{{- range $p := include "wallet.processors" . | fromJsonArray }}
{{- $replicas := int (index $v $p.key).replicaCount -}}
{{- if gt $replicas $partitions }}
{{- fail (printf "%s.replicaCount (%d) must not exceed kafka.topics.partitions (%d): each partition is owned by one member of the consumer group %q, so the extra replicas would idle. Lower the replicas, or choose more partitions before the topics hold data (the count fixes which partition, and so which state, a wallet belongs to)." $p.key $replicas $partitions $p.group) }}
{{- end }}
{{- end }}
{{- if and $v.kafka.strimzi.enabled $v.kafka.external.bootstrapServers }}
{{- fail "kafka.external.bootstrapServers is set while kafka.strimzi.enabled is true: choose one Kafka (set kafka.strimzi.enabled=false to use the external cluster)" }}
{{- end }}
{{- if and (not $v.kafka.strimzi.enabled) (not $v.kafka.external.bootstrapServers) }}
{{- fail "no Kafka: set kafka.external.bootstrapServers (host:port[,host:port]) or kafka.strimzi.enabled=true" }}
{{- end }}
{{- if and $v.kafka.sasl.enabled $v.kafka.strimzi.enabled (ne $v.kafka.sasl.mechanism "SCRAM-SHA-512") }}
{{- fail (printf "kafka.sasl.mechanism %s is not supported with Strimzi here: its KafkaUsers use SCRAM-SHA-512" $v.kafka.sasl.mechanism) }}
{{- end }}
{{- if and $v.kafka.sasl.enabled (not $v.kafka.strimzi.enabled) (not $v.kafka.external.sasl.existingSecret) }}
{{- fail "kafka.sasl.enabled with an external cluster needs kafka.external.sasl.existingSecret: the name of a Secret holding the username and password (secrets are never chart values)" }}
{{- end }}
{{- include "wallet.validateDurability" . -}}
{{- if eq (int $v.api.containerPort) (int $v.api.opsPort) }}
{{- fail (printf "api.containerPort and api.opsPort are both %d: the public API and the operations endpoints need a listener each" (int $v.api.opsPort)) }}
{{- end }}
{{- if eq (int $v.api.service.port) (int $v.api.service.opsPort) }}
{{- fail (printf "api.service.port and api.service.opsPort are both %d: a Service port carries one listener" (int $v.api.service.opsPort)) }}
{{- end }}
{{- include "wallet.validateAuth" . -}}
{{- include "wallet.validateTls" . -}}
{{- if and $v.api.autoscaling.enabled (gt (int $v.api.autoscaling.minReplicas) (int $v.api.autoscaling.maxReplicas)) }}
{{- fail (printf "api.autoscaling.minReplicas (%d) is above api.autoscaling.maxReplicas (%d)" (int $v.api.autoscaling.minReplicas) (int $v.api.autoscaling.maxReplicas)) }}
{{- end }}
{{- end -}}

{{- /* api.auth: what the API would refuse at start, said at render time with the values' names. */ -}}
{{- define "wallet.validateAuth" -}}
{{- $auth := .Values.api.auth -}}
{{- if $auth.enabled }}
{{- range $key := list "issuer" "audience" }}
{{- if not (trim (index $auth $key)) }}
{{- fail (printf "api.auth.enabled needs api.auth.%s: the %s every token must carry" $key (ternary "iss (the issuer's URL)" "aud (this API's identifier at the issuer)" (eq $key "issuer"))) }}
{{- end }}
{{- end }}
{{- $sources := list -}}
{{- if $auth.jwksUrl }}{{ $sources = append $sources "api.auth.jwksUrl" }}{{ end -}}
{{- if $auth.jwks.configMap }}{{ $sources = append $sources "api.auth.jwks.configMap" }}{{ end -}}
{{- if $auth.jwks.secret }}{{ $sources = append $sources "api.auth.jwks.secret" }}{{ end -}}
{{- if ne (len $sources) 1 }}
{{- fail (printf "api.auth.enabled needs exactly one source of the issuer's keys: api.auth.jwksUrl, api.auth.jwks.configMap or api.auth.jwks.secret (%s)" (ternary "none is set" (printf "%s are set together" (join " and " $sources)) (empty $sources))) }}
{{- end }}
{{- end }}
{{- end -}}

{{- /*
Settings under which Kafka may lose an acknowledged deposit are refused unless
kafka.durability.allowUnsafe says so (a disposable cluster: values-kind.yaml).
*/ -}}
{{- define "wallet.validateDurability" -}}
{{- $v := .Values -}}
{{- $t := $v.kafka.topics -}}
{{- $problems := list -}}
{{- $replicas := int $t.replicas -}}
{{- $minIsr := int $t.minInsyncReplicas -}}
{{- if and (gt $replicas 0) (gt $minIsr $replicas) }}
{{- fail (printf "kafka.topics.minInsyncReplicas (%d) is above kafka.topics.replicas (%d): no deposit could ever be acknowledged" $minIsr $replicas) }}
{{- end }}
{{- if lt $replicas 3 }}
{{- $problems = append $problems (printf "kafka.topics.replicas is %d (3 or more keep a deposit through a broker's loss)" $replicas) -}}
{{- end }}
{{- if lt $minIsr 2 }}
{{- $problems = append $problems (printf "kafka.topics.minInsyncReplicas is %d (2 or more: an acknowledged deposit is on two brokers)" $minIsr) -}}
{{- end }}
{{- range $name, $config := dict "depositConfig" $t.depositConfig "tableConfig" $t.tableConfig }}
{{- if hasKey $config "min.insync.replicas" }}
{{- if lt (int (index $config "min.insync.replicas")) 2 }}
{{- $problems = append $problems (printf "kafka.topics.%s sets min.insync.replicas %v" $name (index $config "min.insync.replicas")) -}}
{{- end }}
{{- end }}
{{- if eq (toString (index $config "unclean.leader.election.enable" | default false)) "true" }}
{{- $problems = append $problems (printf "kafka.topics.%s enables unclean leader election" $name) -}}
{{- end }}
{{- end }}
{{- if $v.kafka.strimzi.enabled }}
{{- $s := $v.kafka.strimzi -}}
{{- $c := $s.config -}}
{{- if lt (int $s.nodePool.replicas) 3 }}
{{- $problems = append $problems (printf "kafka.strimzi.nodePool.replicas is %d (3 or more)" (int $s.nodePool.replicas)) -}}
{{- end }}
{{- range $key := list "offsets.topic.replication.factor" "transaction.state.log.replication.factor" "default.replication.factor" }}
{{- if lt (int (index $c $key | default 1)) 3 }}
{{- $problems = append $problems (printf "kafka.strimzi.config %s is %v (3 or more)" $key (index $c $key | default "unset")) -}}
{{- end }}
{{- end }}
{{- range $key := list "min.insync.replicas" "transaction.state.log.min.isr" }}
{{- if lt (int (index $c $key | default 1)) 2 }}
{{- $problems = append $problems (printf "kafka.strimzi.config %s is %v (2 or more)" $key (index $c $key | default "unset")) -}}
{{- end }}
{{- end }}
{{- if eq (toString (index $c "unclean.leader.election.enable" | default false)) "true" }}
{{- $problems = append $problems "kafka.strimzi.config enables unclean.leader.election.enable" -}}
{{- end }}
{{- if ne (toString (index $c "auto.create.topics.enable")) "false" }}
{{- $problems = append $problems "kafka.strimzi.config does not set auto.create.topics.enable: false (a mistyped topic name would be created with the broker's defaults)" -}}
{{- end }}
{{- end }}
{{- if and $problems (not $v.kafka.durability.allowUnsafe) }}
{{- fail (printf "these Kafka settings can lose acknowledged deposits: %s. Fix them, or set kafka.durability.allowUnsafe=true for a disposable cluster (see values-kind.yaml)" (join "; " $problems)) }}
{{- end }}
{{- end -}}

{{/*
A storage quantity in bytes (1Gi, 1024Mi, 500M, ...), as a number to compare: the API server
stores quantities in canonical form (1024Mi comes back as 1Gi), so strings cannot be compared.
*/}}
{{- define "wallet.bytes" -}}
{{- $q := toString . -}}
{{- $n := regexFind "^[0-9.]+" $q -}}
{{- $units := dict "" 1 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "Pi" 1125899906842624 -}}
{{- mulf (float64 $n) (index $units (trimPrefix $n $q) | default 0) -}}
{{- end -}}

{{/*
On `helm upgrade`: a StatefulSet's volumeClaimTemplates, serviceName and selector cannot change
(the API server refuses the whole update). Say which value changed and what to do instead,
before anything is applied. Args: root, key (values key), name (the StatefulSet). `helm template`
has no cluster: lookup answers nothing and nothing is checked.
*/}}
{{- define "wallet.statefulset.immutable" -}}
{{- $live := lookup "apps/v1" "StatefulSet" .root.Release.Namespace .name -}}
{{- if and $live $live.spec.volumeClaimTemplates -}}
{{- $v := index .root.Values .key -}}
{{- $claim := (first $live.spec.volumeClaimTemplates).spec -}}
{{- $how := printf "volumeClaimTemplates of StatefulSet %s are immutable: keep the old value, or resize each PVC (state-%s-N) where the storage class allows expansion, then `kubectl delete statefulset %s --cascade=orphan` and upgrade again (the pods and volumes stay)" .name .name .name -}}
{{- if ne (include "wallet.bytes" $claim.resources.requests.storage) (include "wallet.bytes" $v.persistence.size) -}}
{{- fail (printf "%s.persistence.size cannot change from %s to %s on an installed release: %s" .key $claim.resources.requests.storage $v.persistence.size $how) -}}
{{- end -}}
{{- if ne (toJson $claim.accessModes) (toJson $v.persistence.accessModes) -}}
{{- fail (printf "%s.persistence.accessModes cannot change from %v to %v on an installed release: %s" .key $claim.accessModes $v.persistence.accessModes $how) -}}
{{- end -}}
{{- with $v.persistence.storageClass -}}
{{- $wanted := ternary "" . (eq . "-") -}}
{{- if ne ($claim.storageClassName | default "") $wanted -}}
{{- fail (printf "%s.persistence.storageClass cannot change from %q to %q on an installed release: %s" $.key ($claim.storageClassName | default "") $wanted $how) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* An alert's runbook: always the section of docs/observability.md that holds it, and a link when
the document's published address is known. Args: base (runbookBaseUrl), anchor (the alert, lower case). */}}
{{- define "wallet.runbook" -}}
runbook: {{ printf "docs/observability.md#runbook-%s in the wallet chart's source" .anchor | quote }}
{{- if .base }}
runbook_url: {{ printf "%s#runbook-%s" (trimSuffix "#" .base) .anchor | quote }}
{{- end }}
{{- end -}}

{{/* "true" when a monitoring object is to be rendered: its value is true, or "auto" (the default)
and the cluster serves the prometheus-operator API (.Capabilities, from the API server's
discovery on install and upgrade). Args: root, value. */}}
{{- define "wallet.monitoring.on" -}}
{{- if eq (toString .value) "auto" -}}
{{- if .root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end -}}
{{- else if .value -}}
true
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------- TLS in */}}

{{/* cert-manager's annotation for an issuer, as YAML ({} when none). Call with a certManager value
({clusterIssuer, issuer}); both set is refused by wallet.validateTls. */}}
{{- define "wallet.certManager.annotations" -}}
{{- if .clusterIssuer -}}
{{- toYaml (dict "cert-manager.io/cluster-issuer" .clusterIssuer) -}}
{{- else if .issuer -}}
{{- toYaml (dict "cert-manager.io/issuer" .issuer) -}}
{{- else -}}
{}
{{- end -}}
{{- end -}}

{{/* "true" when a certManager value names an issuer. */}}
{{- define "wallet.certManager.on" -}}
{{- if or .clusterIssuer .issuer }}true{{ end -}}
{{- end -}}

{{/* The Ingress's TLS blocks, as JSON: api.ingress.tls, or with a cert-manager issuer and none
given, one for api.ingress.host into the Secret <fullname>-api-tls (cert-manager writes it). */}}
{{- define "wallet.ingress.tls" -}}
{{- $ing := .Values.api.ingress -}}
{{- if $ing.tls -}}
{{- toJson $ing.tls -}}
{{- else if and (include "wallet.certManager.on" $ing.certManager) $ing.host -}}
{{- toJson (list (dict "hosts" (list $ing.host) "secretName" (printf "%s-tls" (include "wallet.componentName" (dict "root" . "component" "api"))))) -}}
{{- else -}}
[]
{{- end -}}
{{- end -}}

{{/* The Gateway's certificate Secrets, as JSON: gateway.tls.certificateRefs, or with a cert-manager
issuer and none given, <fullname>-gateway-tls (cert-manager writes it). */}}
{{- define "wallet.gateway.certificateRefs" -}}
{{- $tls := .Values.gateway.tls -}}
{{- if $tls.certificateRefs -}}
{{- toJson $tls.certificateRefs -}}
{{- else if include "wallet.certManager.on" $tls.certManager -}}
{{- toJson (list (dict "name" (printf "%s-gateway-tls" (include "wallet.fullname" .)))) -}}
{{- else -}}
[]
{{- end -}}
{{- end -}}

{{/* "true" when a TLS hostname pattern (exact, or "*." + suffix for one or more labels) covers a host. */}}
{{- define "wallet.hostCovered" -}}
{{- if eq .pattern .host -}}
true
{{- else if and (hasPrefix "*." .pattern) (hasSuffix (trimPrefix "*" .pattern) .host) (not (hasPrefix "*." .host)) -}}
true
{{- end -}}
{{- end -}}

{{/* TLS in, checked for consistency: an issuer once, a certificate for the names served. */}}
{{- define "wallet.validateTls" -}}
{{- $ing := .Values.api.ingress -}}
{{- $gw := .Values.gateway -}}
{{- range $where, $cm := dict "api.ingress.certManager" $ing.certManager "gateway.tls.certManager" $gw.tls.certManager }}
{{- if and $cm.clusterIssuer $cm.issuer }}
{{- fail (printf "%s: set clusterIssuer or issuer, not both" $where) }}
{{- end }}
{{- end }}
{{- range $where, $pair := dict "api.ingress" (list $ing.certManager $ing.annotations) "gateway" (list $gw.tls.certManager $gw.annotations) }}
{{- $cm := index $pair 0 -}}
{{- $annotations := index $pair 1 | default dict -}}
{{- if include "wallet.certManager.on" $cm }}
{{- range $key := list "cert-manager.io/cluster-issuer" "cert-manager.io/issuer" }}
{{- if hasKey $annotations $key }}
{{- fail (printf "%s.annotations sets %s and %s.certManager names an issuer too: keep one" $where $key (ternary "gateway.tls" $where (eq $where "gateway"))) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if $ing.enabled }}
{{- if and (include "wallet.certManager.on" $ing.certManager) (not $ing.tls) (not $ing.host) }}
{{- fail "api.ingress.certManager names an issuer but the Ingress has no host to issue for: set api.ingress.host (or api.ingress.tls with the hosts)" }}
{{- end }}
{{- if and $ing.tls $ing.host }}
{{- $covered := false -}}
{{- range $block := $ing.tls }}
{{- range $h := $block.hosts | default list }}
{{- if include "wallet.hostCovered" (dict "pattern" $h "host" $ing.host) }}{{ $covered = true }}{{ end -}}
{{- end }}
{{- end }}
{{- if not $covered }}
{{- fail (printf "api.ingress.tls covers none of api.ingress.host %q: list it in a block's hosts, or clients get the controller's default certificate" $ing.host) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $gw.create $gw.tls.enabled }}
{{- $annotations := $gw.annotations | default dict -}}
{{- if and (or (include "wallet.certManager.on" $gw.tls.certManager) (hasKey $annotations "cert-manager.io/cluster-issuer") (hasKey $annotations "cert-manager.io/issuer")) (not $gw.tls.hostname) }}
{{- fail "cert-manager issues a Gateway's certificates for its listeners' hostnames, and the HTTPS listener has none: set gateway.tls.hostname" }}
{{- end }}
{{- if not (include "wallet.gateway.certificateRefs" . | fromJsonArray) }}
{{- fail "gateway.tls.enabled needs gateway.tls.certificateRefs: the Secret (type kubernetes.io/tls) with the certificate, e.g. [{name: wallet-tls}], or gateway.tls.certManager naming an issuer that writes it" }}
{{- end }}
{{- if and $gw.tls.hostname .Values.api.httpRoute.hostnames (not .Values.api.httpRoute.parentRefs) }}
{{- $covered := false -}}
{{- range $h := .Values.api.httpRoute.hostnames }}
{{- if or (include "wallet.hostCovered" (dict "pattern" $gw.tls.hostname "host" $h)) (include "wallet.hostCovered" (dict "pattern" $h "host" $gw.tls.hostname)) }}{{ $covered = true }}{{ end -}}
{{- end }}
{{- if not $covered }}
{{- fail (printf "api.httpRoute.hostnames %v share no name with gateway.tls.hostname %q: the route would not attach to the HTTPS listener" .Values.api.httpRoute.hostnames $gw.tls.hostname) }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------- Gateway API */}}

{{/* The Gateways the API's HTTPRoute attaches to, as JSON: api.httpRoute.parentRefs, else this
release's Gateway (gateway.create), else none. */}}
{{- define "wallet.httpRoute.parents" -}}
{{- if .Values.api.httpRoute.parentRefs -}}
{{- toJson .Values.api.httpRoute.parentRefs -}}
{{- else if .Values.gateway.create -}}
{{- if include "wallet.gateway.redirects" . -}}
{{- toJson (list (dict "name" (include "wallet.fullname" .) "sectionName" "https")) -}}
{{- else -}}
{{- toJson (list (dict "name" (include "wallet.fullname" .))) -}}
{{- end -}}
{{- else -}}
[]
{{- end -}}
{{- end -}}

{{/* "true" when this release's Gateway answers plain HTTP with a redirect to https: it has the
HTTPS listener, gateway.tls.redirectHttp, and the API's route attaches to it (no parentRefs). */}}
{{- define "wallet.gateway.redirects" -}}
{{- $gw := .Values.gateway -}}
{{- if and $gw.create $gw.tls.enabled $gw.tls.redirectHttp (not .Values.api.httpRoute.parentRefs) }}true{{ end -}}
{{- end -}}

{{/* "true" when the HTTPRoute is rendered: enabled true (then a Gateway must be named), or auto and
the cluster serves gateway.networking.k8s.io/v1 and a Gateway is named. */}}
{{- define "wallet.httpRoute.on" -}}
{{- $enabled := .Values.api.httpRoute.enabled -}}
{{- $parents := include "wallet.httpRoute.parents" . | fromJsonArray -}}
{{- if eq (toString $enabled) "auto" -}}
{{- if and $parents (.Capabilities.APIVersions.Has "gateway.networking.k8s.io/v1") }}true{{ end -}}
{{- else if $enabled -}}
{{- if not $parents -}}
{{- fail "api.httpRoute.enabled is true but names no Gateway: set api.httpRoute.parentRefs (e.g. [{name: public, namespace: gateways}]) or gateway.create=true" -}}
{{- end -}}
true
{{- end -}}
{{- end -}}
