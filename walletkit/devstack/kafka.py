"""Apache Kafka on loopback: the broker every test and benchmark is proven on.

The jars come from Maven Central through ``kafka.pom.xml`` beside this file
(``mvn dependency:copy-dependencies``) into a cache directory outside the repository,
once per pom; nothing is vendored. Each node is a KRaft *combined* node (broker and
controller in one JVM) formatted with ``kafka.tools.StorageTool`` and started as
``kafka.Kafka server.properties``, as Strimzi's pods run the same classes.

``ApacheKafka(nodes=1)`` is what most tests use; ``ApacheKafka(nodes=3)`` is the
fault-test cluster: replication factor 3, ``min.insync.replicas`` 2, unclean leader
election off, the durability production runs with.

Settings chosen for test speed (each one only shortens a wait; none changes what a
client can observe of the protocol):

- ``group.initial.rebalance.delay.ms=0``: the first member of a group gets its
  partitions at once instead of after 3 s;
- ``offsets.topic.num.partitions`` / ``transaction.state.log.num.partitions`` 8
  (default 50): the internal topics are created in a fraction of the time;
- ``broker.session.timeout.ms`` 4000 and ``replica.lag.time.max.ms`` 5000 on the
  three-node cluster: a killed node is fenced and dropped from the ISR in seconds, so
  ``acks=all`` writes resume quickly (production keeps 9 s and 30 s);
- ``log.cleaner.backoff.ms`` 500: a topic whose segments are ready is compacted soon
  (tests that exercise compaction set small ``segment.ms``/``segment.bytes`` on the topic);
- ``transaction.abort.timed.out.transaction.cleanup.interval.ms`` 1000 (default 10 s),
  as the chart sets it too: a timed-out transaction is aborted within a second.

Every node is ended by its own PID (SIGTERM, then SIGKILL); a node that fails to
start raises with the tail of its log.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from walletkit.devstack.net import free_port, port_open
from walletkit.devstack.processes import terminate

POM = Path(__file__).with_name("kafka.pom.xml")

#: The JVM's heap per node: enough for the tests' and the bench's topics.
DEFAULT_HEAP = os.environ.get("WALLET_KAFKA_HEAP", "512m")


class KafkaUnavailable(RuntimeError):
    """Apache Kafka cannot be fetched or started here; the message says what to install or read."""


def kafka_version() -> str:
    """The Kafka version pinned in ``kafka.pom.xml``."""
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    assert match, f"{POM} pins no <kafka.version>"
    return match.group(1)


def cache_root() -> Path:
    """``$WALLET_CACHE_DIR``, else ``$XDG_CACHE_HOME/wallet``, else ``~/.cache/wallet``."""
    if os.environ.get("WALLET_CACHE_DIR"):
        return Path(os.environ["WALLET_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wallet"


def libs_dir() -> Path:
    """Where the jars of this pom live (a new directory whenever the pom changes)."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    return cache_root() / "kafka" / f"{kafka_version()}-{digest}" / "libs"


def _need(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if not found:
        raise KafkaUnavailable(f"Apache Kafka needs {tool}: install {package} (e.g. apt-get install -y {package})")
    return found


def _java() -> str:
    java = os.environ.get("JAVA_HOME") and Path(os.environ["JAVA_HOME"]) / "bin" / "java"
    if java and java.exists():
        return str(java)
    return _need("java", "openjdk-17-jre-headless")


def ensure_kafka(*, quiet: bool = False) -> Path:
    """The directory of the broker's jars, fetched with Maven the first time."""
    libs = libs_dir()
    if (libs / ".complete").exists():
        return libs
    _java()
    mvn = _need("mvn", "maven")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    if not quiet:
        print(
            f"fetching Apache Kafka {kafka_version()} jars with Maven into {libs} (once)...",
            file=sys.stderr,
            flush=True,
        )
    started = time.monotonic()
    build_dir = Path(tempfile.mkdtemp(prefix="mvn-target-"))
    result = subprocess.run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
            f"-Dproject.build.directory={build_dir}",
        ],
        capture_output=True,
        text=True,
    )
    shutil.rmtree(build_dir, ignore_errors=True)
    if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise KafkaUnavailable(f"mvn could not fetch the Kafka jars ({POM}):\n{tail}")
    (staging / ".complete").write_text(kafka_version() + "\n")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    if not quiet:
        print(f"fetched {len(list(libs.glob('*.jar')))} jars in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return libs


_LOG4J2 = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: org.apache.kafka.controller
        level: INFO
      - name: state.change.logger
        level: WARN
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
"""


class KafkaNode:
    """One KRaft combined-mode node (broker + controller) of an :class:`ApacheKafka` cluster."""

    def __init__(
        self, node_id: int, host: str, port: int, controller_port: int, data_dir: Path, log_path: Path
    ) -> None:
        self.node_id = node_id
        self.host = host
        self.port = port
        self.controller_port = controller_port
        self.data_dir = data_dir
        self.log_path = log_path
        self.config_path = data_dir.parent / f"server-{node_id}.properties"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return explain(self.log_path.read_text(errors="replace"), lines)
        except OSError:
            return "(no log)"

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise KafkaUnavailable(
                f"Kafka node {self.node_id} exited with code {self.proc.returncode}; "
                f"log {self.log_path}:\n{self.log_tail()}"
            )

    def start(self, java: str, classpath: str, jvm: list[str]) -> None:
        if port_open(self.host, self.port):
            raise KafkaUnavailable(f"port {self.port} is already in use; stop what listens there or pick another port")
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [java, *jvm, "-cp", classpath, "kafka.Kafka", str(self.config_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()

    def signal(self, sig: int) -> None:
        if self.running:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL: the node dies as in a machine failure (its data stays on disk)."""
        if self.running:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (a controlled shutdown), SIGKILL after ``timeout``."""
        if self.running:
            self.signal(signal.SIGCONT)
            terminate(self.proc, timeout)


class ApacheKafka:
    """An Apache Kafka cluster of ``nodes`` KRaft combined nodes on free loopback ports.

    The interface the devstack expects of a broker: ``bootstrap``, ``start()``,
    ``stop()``, ``pause()``/``resume()`` (SIGSTOP/SIGCONT of every node), ``pid``;
    plus per-node control for fault tests (:meth:`kill_node`, :meth:`start_node`,
    :meth:`leader_of`).
    """

    kind = "apache"
    client_config: dict[str, str] = {}
    service_env: dict[str, str] = {}

    def __init__(
        self,
        nodes: int = 1,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_path: str | Path | None = None,
        data_dir: str | Path | None = None,
        heap: str = DEFAULT_HEAP,
        overrides: dict[str, str] | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.host = host
        self.size = nodes
        self.heap = heap
        self.overrides = dict(overrides or {})
        self._own_dir = data_dir is None
        self.root = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="apache-kafka-"))
        log = Path(log_path) if log_path else self.root / "broker.log"
        ports = [port or free_port(host)] + [free_port(host) for _ in range(nodes - 1)]
        self.nodes = [
            KafkaNode(
                i + 1,
                host,
                ports[i],
                free_port(host),
                self.root / f"node-{i + 1}",
                log if nodes == 1 else log.with_name(f"{log.stem}-{i + 1}{log.suffix}"),
            )
            for i in range(nodes)
        ]
        self._started = False
        self._archive_pending: tuple[Path, Path] | None = None  # (written at exit, final path)

    # -- the broker interface ------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return ",".join(f"{n.host}:{n.port}" for n in self.nodes)

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def pid(self) -> int | None:
        return self.nodes[0].pid

    @property
    def log_paths(self) -> list[Path]:
        return [n.log_path for n in self.nodes]

    def start(self, timeout: float = 90.0) -> ApacheKafka:
        """Format (first start only) and start every node; return once all of them serve metadata."""
        libs = ensure_kafka()
        java, classpath = _java(), f"{libs}/*"
        if not self._started:
            self._format(java, classpath)
        for node in self.nodes:
            if not node.running:
                node.start(java, classpath, self._jvm() + self._class_archive(java, node))
        self._started = True
        self.wait_ready(timeout)
        return self

    def _class_archive(self, java: str, node: KafkaNode) -> list[str]:
        """JVM flags for a class-data-sharing archive of the broker's classes: a node starts in
        ~1.8 s instead of ~3.4 s. The first node started without one writes it when it exits
        (a few seconds more at that stop, once per JDK and set of jars); a JVM that finds an
        archive not matching it ignores it and starts the slow way."""
        binary = Path(java).resolve()
        stat = binary.stat()
        key = hashlib.sha256(f"{binary}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        archive = libs_dir().parent / f"classes-{key}.jsa"
        if archive.exists():
            return [f"-XX:SharedArchiveFile={archive}"]
        if node is not self.nodes[0] or self._archive_pending is not None:
            return []
        self._archive_pending = (archive.with_name(f"{archive.stem}.{os.getpid()}.{node.port}.tmp"), archive)
        return [f"-XX:ArchiveClassesAtExit={self._archive_pending[0]}"]

    def _adopt_archive(self) -> None:
        if self._archive_pending is None or self.nodes[0].running:
            return
        written, archive = self._archive_pending
        self._archive_pending = None
        proc = self.nodes[0].proc
        # Written on the JVM's way out; a node that was SIGKILLed may have left half of it.
        if written.exists() and proc is not None and proc.returncode not in (None, -signal.SIGKILL):
            written.replace(archive)
        else:
            written.unlink(missing_ok=True)

    def stop(self) -> None:
        for node in self.nodes:
            node.signal(signal.SIGCONT)
        # Stopping all at once: a controlled shutdown of the last nodes would wait for a
        # quorum that the others already left.
        for node in self.nodes:
            node.signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop(timeout=15.0)
        self._adopt_archive()
        if self._own_dir:
            shutil.rmtree(self.root, ignore_errors=True)

    def pause(self) -> None:
        """Freeze every node (SIGSTOP): connections stay open, nothing answers."""
        for node in self.nodes:
            node.signal(signal.SIGSTOP)

    def resume(self) -> None:
        for node in self.nodes:
            node.signal(signal.SIGCONT)

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- per-node control (fault tests) -----------------------------------------------------
    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node (its data directory is kept, so it can come back)."""
        self.node(node_id).kill()

    def start_node(self, node_id: int, timeout: float = 90.0) -> None:
        """Restart a node that was killed or stopped; return once the cluster lists it again."""
        libs = ensure_kafka(quiet=True)
        self.node(node_id).start(_java(), f"{libs}/*", self._jvm())
        self.wait_ready(timeout)

    def leader_of(self, topic: str, partition: int, timeout: float = 15.0) -> int:
        """The node id that currently leads ``topic``/``partition``; waits while the metadata
        does not know the partition or its leader yet (a topic just created, a leader moving)."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self._live_bootstrap()})
        deadline = time.monotonic() + timeout
        while True:
            md = admin.list_topics(topic, timeout=10).topics.get(topic)
            found = md.partitions.get(partition) if md is not None and md.error is None else None
            if found is not None and found.leader >= 0:
                return found.leader
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"{topic}[{partition}] has no leader after {timeout:g} s")
            time.sleep(0.2)

    def run_tool(self, main_class: str, *args: str, timeout: float = 60.0) -> str:
        """Run one of Kafka's command-line tools (e.g. ``kafka.admin.ConfigCommand``) against
        this cluster; its output. ``--bootstrap-server`` is passed first."""
        libs = ensure_kafka(quiet=True)
        result = subprocess.run(
            [
                _java(),
                "-Xmx256m",
                "-XX:TieredStopAtLevel=1",
                "-cp",
                f"{libs}/*",
                f"-Dlog4j2.configurationFile={self.root / 'log4j2.yaml'}",
                main_class,
                "--bootstrap-server",
                self._live_bootstrap(),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise KafkaUnavailable(
                f"{main_class} {' '.join(args)} failed ({result.returncode}):\n"
                + explain(result.stdout + result.stderr)
            )
        return result.stdout

    def set_client_quota(self, client_id: str, **quotas: int) -> None:
        """Broker-side quotas for one client id, e.g. ``consumer_byte_rate=4096``."""
        self.run_tool(
            "kafka.admin.ConfigCommand",
            "--alter",
            "--entity-type",
            "clients",
            "--entity-name",
            client_id,
            "--add-config",
            ",".join(f"{k}={v}" for k, v in quotas.items()),
        )

    def clear_client_quota(self, client_id: str, *names: str) -> None:
        """Remove quotas set by :meth:`set_client_quota` (e.g. ``"consumer_byte_rate"``)."""
        self.run_tool(
            "kafka.admin.ConfigCommand",
            "--alter",
            "--entity-type",
            "clients",
            "--entity-name",
            client_id,
            "--delete-config",
            ",".join(names),
        )

    # -- internals -----------------------------------------------------------------------------
    def _live_bootstrap(self) -> str:
        live = [f"{n.host}:{n.port}" for n in self.nodes if n.running]
        return ",".join(live) or self.bootstrap

    def _jvm(self) -> list[str]:
        return [
            f"-Xmx{self.heap}",
            f"-Xms{min_heap(self.heap)}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.root / 'log4j2.yaml'}",
        ]

    def _properties(self, node: KafkaNode) -> dict[str, str]:
        n = self.size
        voters = ",".join(f"{m.node_id}@{m.host}:{m.controller_port}" for m in self.nodes)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{node.host}:{node.port},CONTROLLER://{node.host}:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{node.host}:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(node.data_dir),
            # Durability as production runs it (three nodes), or the only possible one (one).
            "default.replication.factor": str(min(n, 3)),
            "min.insync.replicas": "2" if n >= 3 else "1",
            "offsets.topic.replication.factor": str(min(n, 3)),
            "transaction.state.log.replication.factor": str(min(n, 3)),
            "transaction.state.log.min.isr": "2" if n >= 3 else "1",
            "unclean.leader.election.enable": "false",
            # Topics are created by the services (or Strimzi), never by a client's request.
            "auto.create.topics.enable": "false",
            "num.partitions": "8",
            # Test speed (see the module docstring).
            "group.initial.rebalance.delay.ms": "0",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.num.partitions": "8",
            "log.cleaner.backoff.ms": "500",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
            "share.coordinator.state.topic.replication.factor": str(min(n, 3)),
            "share.coordinator.state.topic.min.isr": "2" if n >= 3 else "1",
        }
        if n > 1:
            props.update(
                {
                    "broker.session.timeout.ms": "4000",
                    "broker.heartbeat.interval.ms": "1000",
                    "replica.lag.time.max.ms": "5000",
                }
            )
        props.update(self.overrides)
        return props

    def _format(self, java: str, classpath: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "log4j2.yaml").write_text(_LOG4J2)
        # A formatted data directory holds only the cluster id, the node's ids and the
        # bootstrap metadata: the same for every cluster of this size and these jars. So it
        # is formatted once into the cache and copied (a second JVM start per node saved);
        # a cluster with overrides is formatted with them, so a bad setting is reported there.
        template = None if self.overrides else self._format_template(java, classpath)
        cluster_id = _kraft_cluster_id()
        for node in self.nodes:
            node.log_path.parent.mkdir(parents=True, exist_ok=True)
            node.config_path.write_text("".join(f"{k}={v}\n" for k, v in self._properties(node).items()))
            if (node.data_dir / "meta.properties").exists():
                continue
            if template is not None:
                shutil.copytree(template / node.data_dir.name, node.data_dir)
                continue
            self._format_node(java, classpath, node.config_path, cluster_id)

    def _format_node(self, java: str, classpath: str, config: Path, cluster_id: str) -> None:
        result = subprocess.run(
            [
                java,
                "-Xmx256m",
                "-XX:TieredStopAtLevel=1",
                "-cp",
                classpath,
                f"-Dlog4j2.configurationFile={self.root / 'log4j2.yaml'}",
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cluster_id}",
                "--config",
                str(config),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise KafkaUnavailable(
                f"formatting Kafka node {config.stem} failed:\n" + explain(result.stdout + result.stderr)
            )

    def _format_template(self, java: str, classpath: str) -> Path:
        """Formatted data directories of a cluster of this size, made once per set of jars."""
        template = libs_dir().parent / "formatted" / f"{self.size}-nodes"
        if (template / ".complete").exists():
            return template
        template.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="staging-", dir=template.parent))
        cluster_id = _kraft_cluster_id()
        try:
            for node in self.nodes:
                props = {**self._properties(node), "log.dirs": str(staging / node.data_dir.name)}
                config = staging / f"server-{node.node_id}.properties"
                config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
                self._format_node(java, classpath, config, cluster_id)
                config.unlink()
            (staging / ".complete").write_text(cluster_id + "\n")
            try:
                staging.rename(template)
            except OSError:  # another process made it first
                pass
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return template

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until a metadata request lists every running node (they registered and are unfenced)."""
        from confluent_kafka.admin import AdminClient

        expected = {n.node_id for n in self.nodes if n.running}
        deadline = time.monotonic() + timeout
        admin = None
        seen: set[int] = set()
        while True:
            for node in self.nodes:
                node.check()
            if all(port_open(n.host, n.port) for n in self.nodes if n.running):
                admin = admin or AdminClient({"bootstrap.servers": self._live_bootstrap(), "logger": _QUIET})
                try:
                    seen = set(admin.list_topics(timeout=2).brokers)
                except Exception:  # noqa: BLE001 - not answering yet
                    seen = set()
                if expected <= seen:
                    return
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- node {n.node_id} ({n.log_path}):\n{n.log_tail(20)}" for n in self.nodes)
                raise KafkaUnavailable(
                    f"Kafka on {self.bootstrap} not ready after {timeout:.0f} s "
                    f"(nodes answering: {sorted(seen)}, expected {sorted(expected)}):\n{tails}"
                )
            time.sleep(0.2)


def explain(output: str, lines: int = 20) -> str:
    """What a JVM's output says went wrong: its first error lines, then its tail (a stack
    trace's last lines alone rarely name the cause)."""
    all_lines = output.splitlines()
    errors = [
        line
        for line in all_lines
        if re.search(r"Exception|Error|ERROR|error:", line) and not line.lstrip().startswith("at ")
    ][:5]
    tail = all_lines[-lines:]
    head = [line for line in errors if line not in tail]
    return "\n".join([*head, *(["..."] if head else []), *tail])


def min_heap(heap: str) -> str:
    """Half of a ``-Xmx`` value such as ``512m`` or ``1g`` (JVM start-up is faster with a floor)."""
    m = re.fullmatch(r"(\d+)([mMgG])", heap)
    if not m:
        return heap
    size = int(m.group(1)) * (1024 if m.group(2) in "gG" else 1)
    return f"{max(64, size // 2)}m"


def _kraft_cluster_id() -> str:
    """A random KRaft cluster id (what ``kafka-storage random-uuid`` prints: 16 bytes, base64url)."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class _Quiet:
    """A logger for the readiness probe's client: connection refusals while nodes start are expected."""

    def log(self, *args, **kwargs) -> None:  # librdkafka calls logger.log(level, fmt, *args)
        pass


_QUIET = _Quiet()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m walletkit.devstack.kafka",
        description="Fetch the pinned Apache Kafka jars, or run a local cluster.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="fetch the jars into the cache (once per pom) and print their directory")
    run = sub.add_parser("run", help="start a cluster on loopback until Ctrl-C")
    run.add_argument("--nodes", type=int, default=1)
    run.add_argument("--port", type=int, default=None, help="the first node's client port (default: a free one)")
    args = p.parse_args(argv)
    try:
        if args.command == "fetch":
            print(ensure_kafka())
            return 0
        cluster = ApacheKafka(args.nodes, port=args.port).start()
    except KafkaUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Apache Kafka {kafka_version()} on {cluster.bootstrap}; Ctrl-C stops it", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
