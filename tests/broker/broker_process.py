"""A real `headwater serve` process on a free loopback port, for tests with real clients."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServedBroker:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return self.process.wait(timeout=30)
        return self.process.returncode


def start_broker(
    data_dir: Path, log_path: Path, *extra: str, port: int | None = None
) -> ServedBroker:
    port = port or free_port()
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the process for its lifetime
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "headwater",
            "serve",
            "--data-dir",
            str(data_dir),
            "--listen",
            f"127.0.0.1:{port}",
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"broker exited: {log_path.read_text(errors='replace')[-4000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return ServedBroker(process, port, data_dir, log_path)
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"broker did not listen: {log_path.read_text(errors='replace')[-4000:]}")
