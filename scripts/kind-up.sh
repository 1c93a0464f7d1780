#!/usr/bin/env bash
# Bring the wallet service up on a local kind cluster, the way it runs in production:
#   1. a kind cluster from kind-config.yaml (the node's port 30080 on localhost:8080),
#   2. Envoy Gateway (the Gateway API CRDs and a controller) and its GatewayClass `eg`, whose
#      proxies listen on that node port (scripts/kind-gateway.yaml),
#   3. the Strimzi operator (its Helm chart), watching the wallet namespace,
#   4. kube-prometheus-stack (Prometheus, Grafana, the monitoring CRDs),
#   5. `skaffold dev --profile kind`: builds the three images, loads them into kind, deploys
#      charts/wallet, and rebuilds on every change until Ctrl-C.
# Re-running it reuses the cluster and upgrades the add-ons in place.
#
# Usage: scripts/kind-up.sh [--no-dev]     (--no-dev: set everything up, skip `skaffold dev`)
# Environment (all optional):
#   CLUSTER_NAME           kind cluster name (default: wallet; skaffold's kind profile expects it)
#   STRIMZI_CHART_VERSION  Strimzi operator chart version (default: 1.2.0, the CRDs the tests use)
#   KPS_CHART_VERSION      kube-prometheus-stack chart version (default: the latest)
#   ENVOY_GATEWAY_VERSION  Envoy Gateway chart version (default: v1.6.0)
set -euo pipefail

CLUSTER_NAME=${CLUSTER_NAME:-wallet}
NAMESPACE=wallet  # fixed by skaffold.yaml's release
STRIMZI_CHART_VERSION=${STRIMZI_CHART_VERSION:-1.2.0}
KPS_CHART_VERSION=${KPS_CHART_VERSION:-}
ENVOY_GATEWAY_VERSION=${ENVOY_GATEWAY_VERSION:-v1.6.0}
RUN_DEV=true

for arg in "$@"; do
  case "$arg" in
    --no-dev) RUN_DEV=false ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "kind-up: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

step() { printf '\n==> %s\n' "$*"; }
die() { echo "kind-up: $*" >&2; exit 1; }

# Every tool this script calls, with where to get it; report all that are missing at once.
missing=0
need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "kind-up: '$1' is required but not on PATH: $2" >&2
    missing=1
  fi
}
need docker "https://docs.docker.com/engine/install/ (kind runs the cluster in containers)"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation (v0.20 or newer)"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need helm "https://helm.sh/docs/intro/install/ (Helm 3.8+ or 4: OCI charts)"
need skaffold "https://skaffold.dev/docs/install/ (v2)"
[ "$missing" -eq 0 ] || die "install the missing tools above, then run me again"
docker info >/dev/null 2>&1 || die "docker is installed but the daemon is not reachable (is it running? are you in the docker group?)"

# Paths below (kind-config.yaml, skaffold.yaml) are relative to the repository root.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step "kind cluster '$CLUSTER_NAME'"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  echo "reusing the existing cluster"
else
  kind create cluster --name "$CLUSTER_NAME" --config kind-config.yaml --wait 120s
fi
CONTEXT="kind-$CLUSTER_NAME"
kubectl config use-context "$CONTEXT" >/dev/null

step "Envoy Gateway $ENVOY_GATEWAY_VERSION (localhost:8080 -> node port 30080 -> the Gateway)"
helm upgrade --install eg oci://docker.io/envoyproxy/gateway-helm \
  --version "$ENVOY_GATEWAY_VERSION" \
  --namespace envoy-gateway-system --create-namespace \
  --wait --timeout 10m
kubectl apply -f scripts/kind-gateway.yaml

step "namespace '$NAMESPACE'"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -

step "Strimzi operator $STRIMZI_CHART_VERSION (watches '$NAMESPACE')"
helm upgrade --install strimzi oci://quay.io/strimzi-helm/strimzi-kafka-operator \
  --version "$STRIMZI_CHART_VERSION" \
  --namespace strimzi --create-namespace \
  --set "watchNamespaces={$NAMESPACE}" \
  --wait --timeout 10m

step "kube-prometheus-stack ${KPS_CHART_VERSION:-(latest)}"
helm repo add prometheus-community https://prometheus-community.github.io/helm-charts --force-update >/dev/null
# The *SelectorNilUsesHelmValues=false settings make Prometheus pick up every ServiceMonitor,
# PodMonitor and PrometheusRule, not only those labelled with this Helm release; Grafana's
# sidecar loads dashboard ConfigMaps from all namespaces.
helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
  ${KPS_CHART_VERSION:+--version "$KPS_CHART_VERSION"} \
  --namespace monitoring --create-namespace \
  --set prometheus.prometheusSpec.serviceMonitorSelectorNilUsesHelmValues=false \
  --set prometheus.prometheusSpec.podMonitorSelectorNilUsesHelmValues=false \
  --set prometheus.prometheusSpec.ruleSelectorNilUsesHelmValues=false \
  --set grafana.sidecar.dashboards.searchNamespace=ALL \
  --wait --timeout 15m

cat <<INFO

The cluster is ready. Once the release is up (the first start waits for Kafka and the topics):
  curl -X POST localhost:8080/deposit -H 'Content-Type: application/json' -d '{"WalletID": "walletID001", "Amount": 8000}'
  curl localhost:8080/details/walletID001
  helm test wallet -n $NAMESPACE
  kubectl -n monitoring port-forward svc/kube-prometheus-stack-grafana 3000:80   # Grafana on localhost:3000
INFO

if [ "$RUN_DEV" = true ]; then
  step "skaffold dev (Ctrl-C stops it and removes the release)"
  exec skaffold dev --profile kind --kube-context "$CONTEXT"
fi
