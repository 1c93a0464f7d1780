# One entry point for humans and CI. `make run` starts the local stack; `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CHECKOV := $(VENV)/checkov/.installed
BENCH_STAMP := $(VENV)/bench/.installed
# The broker of `make run`: tansu (embedded, instant, memory-only) or apache (Apache Kafka).
KAFKA ?= tansu

.PHONY: run test bench proto clean kafka images controlplane cluster cluster-down dashboards

$(STAMP): pyproject.toml constraints.txt requirements/chart.txt requirements/api-tests.txt requirements/plots.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet -c constraints.txt -r requirements/chart.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -r requirements/api-tests.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -r requirements/plots.txt
	@touch $@

# checkov (manifest and Dockerfile scanner) needs an older `packaging` than the
# project's lock, so it gets a venv of its own; the chart tests find it there.
$(CHECKOV): requirements/checkov.txt
	@test -x $(VENV)/checkov/bin/python || $(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/python -m pip install --quiet -r requirements/checkov.txt
	@touch $@

# The benchmark's peer (Quix Streams) needs an older confluent-kafka than the lock:
# it gets a venv of its own, as checkov does.
$(BENCH_STAMP): requirements/bench.txt
	@test -x $(VENV)/bench/bin/python || $(PYTHON) -m venv $(VENV)/bench
	$(VENV)/bench/bin/python -m pip install --quiet -r requirements/bench.txt
	@touch $@

## kafka: fetch the pinned Apache Kafka jars (walletkit/devstack/kafka.pom.xml) into ~/.cache/wallet once; needs Java 17+ and Maven
kafka: $(STAMP)
	@command -v java >/dev/null || { echo "Apache Kafka needs Java 17+: apt-get install -y openjdk-17-jre-headless"; exit 1; }
	@command -v mvn >/dev/null || { echo "fetching Apache Kafka needs Maven: apt-get install -y maven"; exit 1; }
	@$(BIN)/python -m walletkit.devstack.kafka fetch >/dev/null

## run: install, start a broker and the three services on localhost:8080 (Ctrl-C stops all); KAFKA=apache for Apache Kafka
run: $(STAMP) $(if $(filter apache,$(KAFKA)),kafka)
	$(BIN)/wallet-stack --kafka $(KAFKA)

## controlplane: build the Kubernetes components (etcd, kube-apiserver, controller manager, scheduler, kubelet, kube-proxy, kubectl), CoreDNS and helm from the Go module proxy (once per machine, about 15 minutes cold; needs Go)
controlplane: $(STAMP)
	@command -v go >/dev/null || test -x /usr/local/go/bin/go || { echo "the control plane and the node are built with Go 1.26+: install Go"; exit 1; }
	@PATH="$$PATH:/usr/local/go/bin" $(BIN)/python -m walletkit.devstack.controlplane

## cluster: start a single-node Kubernetes cluster on this machine (root; containerd, runc, CNI plugins from Debian), build and import the images, run Kafka in it; prints the KUBECONFIG and the helm line
cluster: $(STAMP) kafka controlplane
	@for t in containerd runc buildah; do command -v $$t >/dev/null || { echo "make cluster needs $$t: apt-get install -y containerd runc containernetworking-plugins buildah debootstrap"; exit 1; }; done
	$(BIN)/python -m walletkit.devstack.node up

## cluster-down: end the node of `make cluster` (every process by its PID), remove its bridge and rules
cluster-down:
	$(BIN)/python -m walletkit.devstack.node down

## test: install and run the whole test suite (starts its own Apache Kafka nodes on free loopback ports)
test: $(STAMP) $(CHECKOV) $(BENCH_STAMP) kafka controlplane
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## bench: install, then run the benchmark and print the table (BENCH_ARGS="--quick" for a one-minute run; needs wrk)
bench: $(STAMP) $(BENCH_STAMP) kafka
	@command -v wrk >/dev/null || { echo "bench needs wrk: apt-get install -y wrk"; exit 1; }
	PYTHONPATH=bench $(BIN)/python -m wallet_bench $(BENCH_ARGS)

## dashboards: run the stack on Apache Kafka with Prometheus through a scripted load, a burst, a processor kill and a restore; draw every dashboard panel to docs/img/dashboards (DASHBOARDS_ARGS="--out DIR")
dashboards: $(STAMP) kafka
	@command -v prometheus >/dev/null || { echo "make dashboards needs Prometheus: apt-get install -y prometheus"; exit 1; }
	$(BIN)/python -m walletkit.devstack.scenario $(DASHBOARDS_ARGS)

## images: build the three service images with buildah, no Docker engine needed (IMAGES_ARGS="save DIR" for kind load, "push REGISTRY")
images: $(STAMP)
	@command -v buildah >/dev/null || { echo "building images needs buildah (and debootstrap to make the base): apt-get install -y buildah debootstrap"; exit 1; }
	$(BIN)/python -m walletkit.devstack.images $(or $(IMAGES_ARGS),build)

## proto: regenerate the Python code of proto/wallet.proto
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=walletkit/wallet --pyi_out=walletkit/wallet proto/wallet.proto

clean:
	rm -rf $(VENV) .state build *.egg-info
