"""Fixtures for the Tailgate end-to-end tests: a recording downstream receiver and
a `tailgate serve` process in front of it, both on 127.0.0.1.

The binary is $TAILGATE_BIN, else <repo>/.build/debug/tailgate; the policy file
is $TAILGATE_POLICIES, else <repo>/policies/default.yaml. A missing binary or
policy file fails the tests (it does not skip them).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

from receiver import Receiver  # noqa: E402

DEFAULT_BINARY = REPO / ".build" / "debug" / "tailgate"
POLICIES = Path(os.environ.get("TAILGATE_POLICIES") or REPO / "policies" / "default.yaml")
READY_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 20.0

CONFIG_YAML = """\
buffer:
  wait_after_root: 300ms   # decide this long after the root span (empty parent) arrived
  idle_timeout: 2s         # or after this long without new spans
  max_trace_age: 30s
limits:
  max_request_bytes: 1MiB  # after decompression
forwarder:
  batch_timeout: 100ms
"""


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (bind port 0, read it, close)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def tailgate_binary() -> Path:
    path = Path(os.environ.get("TAILGATE_BIN") or DEFAULT_BINARY)
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"tailgate binary not found or not executable at {path}. Build it first "
            f"(`swift build` in {REPO}) or point TAILGATE_BIN at it.",
            pytrace=False,
        )
    if not POLICIES.is_file():
        pytest.fail(f"policy file {POLICIES} does not exist", pytrace=False)
    return path


class TailgateProcess:
    """One `tailgate serve` child process with its own ports and log file."""

    def __init__(self, binary: Path, workdir: Path, downstream_port: int, config_text: str = CONFIG_YAML) -> None:
        self.config_text = config_text
        self.binary = binary
        self.workdir = workdir
        self.downstream_port = downstream_port
        self.grpc_port, self.http_port, self.metrics_port = free_ports(3)
        self.config_path = workdir / "tailgate.yaml"
        self.log_path = workdir / "tailgate.log"
        self.proc: subprocess.Popen | None = None
        self.exit_code: int | None = None

    # -- addresses -----------------------------------------------------------

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def traces_url(self) -> str:
        return f"{self.http_base}/v1/traces"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    # -- lifecycle -----------------------------------------------------------

    def command(self) -> list[str]:
        return [
            str(self.binary), "serve",
            "--config", str(self.config_path),
            "--policies", str(POLICIES),
            "--grpc-listen", self.grpc_endpoint,
            "--http-listen", f"127.0.0.1:{self.http_port}",
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
            "--downstream", f"grpc://127.0.0.1:{self.downstream_port}",
        ]

    def start(self) -> None:
        self.config_path.write_text(self.config_text)
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.workdir)
        finally:
            log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        pending = {self.grpc_port, self.http_port, self.metrics_port}
        while pending:
            if self.proc.poll() is not None:
                self.exit_code = self.proc.returncode
                pytest.fail(f"tailgate exited with code {self.exit_code} during startup.\n"
                            f"command: {' '.join(self.command())}\n{self.log_tail()}", pytrace=False)
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"tailgate did not listen on ports {sorted(pending)} within "
                            f"{READY_TIMEOUT_S:.0f}s.\ncommand: {' '.join(self.command())}\n"
                            f"{self.log_tail()}", pytrace=False)
            pending = {p for p in pending if not _port_open(p)}
            if pending:
                time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = EXIT_TIMEOUT_S) -> int:
        """Sends sig and waits (bounded) for the exit; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"tailgate did not exit within {timeout:.0f}s of "
                            f"{signal.Signals(sig).name}\n{self.log_tail()}", pytrace=False)
        self.exit_code = self.proc.returncode
        return self.exit_code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    # -- diagnostics ---------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, max_chars: int = 8000) -> str:
        text = self.log_text()
        if len(text) > max_chars:
            text = "...\n" + text[-max_chars:]
        return f"--- tailgate output ({self.log_path}) ---\n{text}\n--- end ---"

    def metrics_text(self, timeout: float = 5.0) -> str:
        response = requests.get(self.metrics_url, timeout=timeout)
        assert response.status_code == 200, f"GET /metrics -> {response.status_code}: {response.text[:500]}"
        return response.text

    def counter(self, name: str) -> float | None:
        """Sum over all label sets of a Prometheus sample `name`; None if absent."""
        pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})?\s+(\S+)")
        values = [float(m.group(1)) for line in self.metrics_text().splitlines()
                  if (m := pattern.match(line))]
        return sum(values) if values else None


@pytest.fixture
def receiver():
    rx = Receiver()
    rx.start()
    yield rx
    rx.stop()


@pytest.fixture
def tailgate(request, receiver, tmp_path):
    binary = tailgate_binary()
    tg = TailgateProcess(binary, tmp_path, receiver.port)
    request.node._tailgates = getattr(request.node, "_tailgates", []) + [tg]
    tg.start()
    yield tg
    if tg.alive():  # the test did not stop it: stop it now, within bounds
        tg.proc.send_signal(signal.SIGTERM)
        try:
            tg.proc.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            tg.kill()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        for tg in getattr(item, "_tailgates", []):
            report.sections.append((f"tailgate output ({report.when})", tg.log_tail(20000)))
    return report
