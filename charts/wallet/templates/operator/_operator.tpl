{{- /* Helpers of the lag-aware scaling operator (templates/operator/). */ -}}

{{/*
"true" when wallet-operator owns the replicas of a processor's StatefulSet, else "".
Call with (dict "root" $ "key" "balance"). The StatefulSet then omits `replicas`.
*/}}
{{- define "wallet.operator.ownsReplicas" -}}
{{- $op := .root.Values.operator -}}
{{- if and $op.enabled (index $op.scalers .key).enabled -}}true{{- end -}}
{{- end -}}

{{/* Image of the operator: its own if operator.image.repository is set, else the API image (which contains it). */}}
{{- define "wallet.operator.image" -}}
{{- $op := .Values.operator.image -}}
{{- if $op.repository -}}
{{- include "wallet.image" (dict "root" . "image" $op) -}}
{{- else -}}
{{- include "wallet.image" (dict "root" . "image" .Values.api.image) -}}
{{- end -}}
{{- end -}}

{{/* The processors the operator scales, as JSON (the entries of wallet.processors whose scaler is enabled). */}}
{{- define "wallet.operator.scaled" -}}
{{- $out := list -}}
{{- range $p := include "wallet.processors" . | fromJsonArray -}}
{{- if include "wallet.operator.ownsReplicas" (dict "root" $ "key" $p.key) -}}
{{- $out = append $out $p -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}
