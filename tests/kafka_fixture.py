"""A real single-node Apache Kafka broker (KRaft combined mode) for differential tests.

The jars come from ``scripts/fetch-kafka.sh`` (Maven Central, cached outside the repository).
`KafkaBroker` formats a fresh storage directory, starts ``kafka.Kafka`` as broker and controller
on two free loopback ports, and waits until the client listener answers ApiVersions and Metadata.

Where the jars are looked for, first hit wins:
  1. the ``libs_dir`` argument,
  2. ``$HEADWATER_KAFKA_LIBS``,
  3. ``${HEADWATER_KAFKA_HOME:-~/.cache/headwater/kafka-$KAFKA_VERSION}/libs``.
"""

from __future__ import annotations

import atexit
import base64
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

KAFKA_VERSION = os.environ.get("KAFKA_VERSION", "4.1.1")
FETCH_HINT = "run `bash scripts/fetch-kafka.sh` (CI runs it) to download the Kafka broker jars"

# Light on a 2-core machine and quick to start: small fixed heap, serial GC, C1 only.
JVM_FLAGS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Xss512k",
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",
)

_LOG4J2_PROPERTIES = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = {level}
logger.apache.name = org.apache.kafka
logger.apache.level = {level}
logger.state.name = state.change.logger
logger.state.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
"""


class KafkaNotFetchedError(RuntimeError):
    """The broker jars are not in the cache."""


class KafkaStartError(RuntimeError):
    """The broker did not come up; the message carries the tail of its log."""


def default_libs_dir() -> Path:
    explicit = os.environ.get("HEADWATER_KAFKA_LIBS")
    if explicit:
        return Path(explicit)
    home = os.environ.get("HEADWATER_KAFKA_HOME") or str(
        Path.home() / ".cache" / "headwater" / f"kafka-{KAFKA_VERSION}"
    )
    return Path(home) / "libs"


def check_libs(libs_dir: Path) -> None:
    """Raise `KafkaNotFetchedError` with a how-to-fix message unless `libs_dir` holds the broker."""
    if not libs_dir.is_dir() or not any(libs_dir.glob("kafka_2.13-*.jar")):
        raise KafkaNotFetchedError(f"no Kafka broker jars in {libs_dir}: {FETCH_HINT}")
    if shutil.which("java") is None:
        raise KafkaNotFetchedError("`java` (17+) is not on PATH; the Kafka broker needs it")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 characters)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


# --- a dependency-free readiness probe: ApiVersions v0, then Metadata v1 --------------------------


def _request(
    sock: socket.socket, api_key: int, version: int, correlation: int, body: bytes
) -> bytes:
    client_id = b"headwater-probe"
    header = struct.pack(">hhih", api_key, version, correlation, len(client_id)) + client_id
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _read_exact(sock, 4))[0]
    response = _read_exact(sock, size)
    (got,) = struct.unpack_from(">i", response)
    if got != correlation:
        raise OSError(f"correlation id {got} != {correlation}")
    return response[4:]


def _read_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise OSError("connection closed by the broker")
        chunks += chunk
    return bytes(chunks)


def probe(host: str, port: int, timeout: float = 2.0) -> bool:
    """True once the broker answers ApiVersions without error and lists a broker in Metadata."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            api_versions = _request(sock, 18, 0, 1, b"")
            (error,) = struct.unpack_from(">h", api_versions)
            if error != 0:
                return False
            metadata = _request(sock, 3, 1, 2, struct.pack(">i", -1))  # all topics
            (brokers,) = struct.unpack_from(">i", metadata)
            return brokers > 0
    except (OSError, struct.error):
        return False


class KafkaBroker:
    """One KRaft broker+controller process with its own temp dir; `start()`, then `stop()`."""

    def __init__(
        self,
        libs_dir: Path | str | None = None,
        *,
        startup_timeout: float = 90.0,
        log_level: str = "INFO",
        config: Mapping[str, str] | None = None,
    ) -> None:
        self.libs_dir = Path(libs_dir) if libs_dir is not None else default_libs_dir()
        self.startup_timeout = startup_timeout
        self.log_level = log_level
        self.extra_config = dict(config or {})
        self.host = "127.0.0.1"
        self.port = 0
        self.controller_port = 0
        self.cluster_id = new_cluster_id()
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    # -- public surface ------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        if not self.port:
            raise RuntimeError("the broker is not started")
        return f"{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        if self.workdir is None:
            raise RuntimeError("the broker is not started")
        return self.workdir / "broker.log"

    def start(self) -> KafkaBroker:
        check_libs(self.libs_dir)
        atexit.register(self.stop)  # a safety net if the owner never reaches stop()
        self.workdir = Path(tempfile.mkdtemp(prefix="headwater-kafka-"))
        began = time.monotonic()
        try:
            self.port, self.controller_port = self._two_free_ports()
            properties = self._write_config()
            self._format_storage(properties)
            self._launch(properties)
            self._wait_until_ready(began)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        atexit.unregister(self.stop)

    def log_tail(self, lines: int = 60) -> str:
        parts = []
        if self.workdir is not None:
            for name in ("format.log", "stdout.log", "broker.log"):
                path = self.workdir / name
                if path.exists():
                    text = path.read_text(errors="replace").splitlines()[-lines:]
                    parts.append(f"--- {name} (last {len(text)} lines) ---\n" + "\n".join(text))
        return "\n".join(parts) or "(no broker log)"

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------------

    @staticmethod
    def _two_free_ports() -> tuple[int, int]:
        first = free_port()
        second = free_port()
        while second == first:
            second = free_port()
        return first, second

    def _java(self, main_class: str, *args: str) -> list[str]:
        assert self.workdir is not None
        log4j = self.workdir / "log4j2.properties"
        return [
            "java",
            *JVM_FLAGS,
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.workdir}",
            "-cp",
            f"{self.libs_dir}/*",
            main_class,
            *args,
        ]

    def _write_config(self) -> Path:
        assert self.workdir is not None
        (self.workdir / "log4j2.properties").write_text(
            _LOG4J2_PROPERTIES.format(log_file=self.workdir / "broker.log", level=self.log_level)
        )
        config = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Few threads: a test broker on a 2-core machine.
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
        }
        config.update(self.extra_config)
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in config.items()))
        return path

    def _format_storage(self, properties: Path) -> None:
        assert self.workdir is not None
        command = self._java(
            "kafka.tools.StorageTool",
            "format",
            "--ignore-formatted",
            f"--cluster-id={self.cluster_id}",  # one argument: an id may start with "-"
            "-c",
            str(properties),
        )
        with open(self.workdir / "format.log", "wb") as out:
            result = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, timeout=120, check=False
            )
        if result.returncode != 0:
            raise KafkaStartError(
                f"kafka StorageTool format exited with {result.returncode}\n{self.log_tail()}"
            )

    def _launch(self, properties: Path) -> None:
        assert self.workdir is not None
        with open(self.workdir / "stdout.log", "wb") as out:
            self.process = subprocess.Popen(
                self._java("kafka.Kafka", str(properties)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _wait_until_ready(self, began: float) -> None:
        assert self.process is not None
        deadline = began + self.startup_timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise KafkaStartError(
                    f"the Kafka broker exited with {code} during startup\n{self.log_tail()}"
                )
            if probe(self.host, self.port):
                return
            time.sleep(0.25)
        raise KafkaStartError(
            f"the Kafka broker did not answer on {self.bootstrap} within "
            f"{self.startup_timeout:.0f} s\n{self.log_tail()}"
        )
