"""wallet-operator: a kopf operator that scales the processor StatefulSets by consumer-group lag.

Modules, one concept each:

- ``decision``: the pure scaling rule (bounds, partition cap, stabilization windows);
- ``resource``: the ProcessorScaler resource: names, spec validation, status conditions;
- ``kafka_lag``: reads a group's committed offsets and the topic's end offsets (Kafka only);
- ``kube``: the API endpoint and the StatefulSet scale subresource (Kubernetes only);
- ``reconciler``: one sync (read, decide, scale, status, Events), independent of kopf;
- ``handlers``: the kopf handlers and settings; ``metrics``: Prometheus; ``main``: the CLI.
"""
