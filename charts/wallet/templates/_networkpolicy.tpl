{{- /* Egress every service needs: cluster DNS, and Kafka. */ -}}
{{- define "wallet.networkPolicy.serviceEgress" -}}
{{- $np := .Values.networkPolicy -}}
- to:
    - namespaceSelector:
        {{- toYaml $np.dns.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml $np.dns.podSelector | nindent 8 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
- ports:
    {{- range $np.kafka.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- if .Values.kafka.strimzi.enabled }}
  to:
    - podSelector:
        matchLabels:
          strimzi.io/cluster: {{ include "wallet.kafka.clusterName" . }}
          strimzi.io/kind: Kafka
  {{- else if $np.kafka.to }}
  to:
    {{- toYaml $np.kafka.to | nindent 4 }}
  {{- end }}
{{- end }}

{{- /* Prometheus scraping a metrics port. Args: root, port (the port's name). */ -}}
{{- define "wallet.networkPolicy.fromPrometheus" -}}
- from:
    - namespaceSelector:
        {{- toYaml .root.Values.networkPolicy.prometheus.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml .root.Values.networkPolicy.prometheus.podSelector | nindent 8 }}
  ports:
    - port: {{ .port }}
      protocol: TCP
{{- end }}
