"""Shared helpers for the deploy-kit tests (Tests/Deploy): paths, tools, free ports, and a bounded
`tailgate serve` / `prometheus` process on 127.0.0.1.

Run with `.venv/bin/python -m pytest -q -p no:cacheprovider Tests/Deploy`. The tailgate binary is
$TAILGATE_BIN, else <repo>/.build/debug/tailgate. promtool and prometheus come from Debian's `prometheus`
package and are required (a missing one fails the tests); the other linters are optional and skip with a reason.
"""

from __future__ import annotations

import os
import re
import shutil
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
DEPLOY = REPO / "deploy"
ALERTS = DEPLOY / "prometheus" / "tailgate-alerts.yaml"
ALERTS_TEST = DEPLOY / "prometheus" / "tailgate-alerts.test.yaml"
DASHBOARD = DEPLOY / "grafana" / "tailgate-dashboard.json"
METRICS_SOURCE = REPO / "Sources" / "TailgateRuntime" / "TailgateMetrics.swift"
DEFAULT_POLICIES = REPO / "policies" / "default.yaml"

# The Python OpenTelemetry SDK traffic generator of the end-to-end tests.
sys.path.insert(0, str(REPO / "Tests" / "EndToEnd"))

# The phrase that marks a dashboard panel whose queries return zero or nothing under normal traffic.
EXPECTED_ZERO = "Expected zero or empty under normal traffic."

# The GenAI row of the dashboard and its panel ids (1-99 are the operational rows').
GENAI_ROW_TITLE = "GenAI (all traffic, before sampling)"
GENAI_PANEL_IDS = range(100, 200)

# The exact, pre-sampling GenAI metrics Tailgate exposes on /metrics (issue 13, item 1): name -> (type, labels).
# This is the contract the dashboard's GenAI row and the GenAI alerts are written against; the live test checks
# that the real binary exposes them. Histograms also expose _bucket (with `le`), _sum and _count.
GENAI_METRICS = {
    "tailgate_gen_ai_tokens_total": ("counter", {"type", "provider", "model"}),
    "tailgate_gen_ai_token_details_total": ("counter", {"type", "provider", "model"}),
    "tailgate_gen_ai_cost_usd_total": ("counter", {"provider", "model"}),
    "tailgate_gen_ai_calls_total": ("counter", {"operation", "provider", "model"}),
    "tailgate_gen_ai_call_failures_total": ("counter", {"provider", "model", "error_type"}),
    "tailgate_gen_ai_operation_duration_seconds": ("histogram", {"operation", "provider", "model"}),
    "tailgate_gen_ai_agent_runs_total": ("counter", {"agent", "outcome"}),
    "tailgate_gen_ai_tool_calls_total": ("counter", {"tool"}),
    "tailgate_gen_ai_tool_call_failures_total": ("counter", {"tool"}),
    "tailgate_gen_ai_label_overflow_total": ("counter", {"label"}),
}
HISTOGRAM_SUFFIXES = ("bucket", "sum", "count")


def genai_series_names() -> set[str]:
    """Every series name of the GenAI metrics (histograms with their _bucket/_sum/_count)."""
    names = set()
    for name, (kind, _) in GENAI_METRICS.items():
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_{suffix}" for suffix in HISTOGRAM_SUFFIXES}
    return names


def metric_names_used(text: str) -> set[str]:
    """tailgate_* metric names in a rules file or dashboard (recording rules are named tailgate:*, left out)."""
    return set(re.findall(r"\b(tailgate_[a-z_]+)\b(?![:])", text))


def tool(name: str, required: bool, hint: str) -> str:
    """The path of a command-line tool: fails (required) or skips the test when it is missing."""
    for candidate in (shutil.which(name), str(Path(sys.executable).parent / name)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    message = f"{name} not found: {hint}"
    if required:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def promtool() -> str:
    return tool("promtool", True, "apt-get install -y prometheus (Debian's package ships promtool)")


def tailgate_binary() -> Path:
    path = Path(os.environ.get("TAILGATE_BIN") or REPO / ".build" / "debug" / "tailgate")
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"tailgate binary not found at {path}: build it (`swift build`) or set TAILGATE_BIN",
                    pytrace=False)
    return path


def free_ports(count: int) -> list[int]:
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


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path, ok=(200,)) -> None:
    """Waits (bounded) until GET url answers one of `ok`; fails with the process' log otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[0]} exited with {proc.returncode} while starting:\n{tail(log)}", pytrace=False)
        try:
            last = requests.get(url, timeout=1).status_code
            if last in ok:
                return
        except requests.RequestException as error:
            last = error
        time.sleep(0.1)
    pytest.fail(f"{url} not ready within {timeout:.0f}s (last: {last}):\n{tail(log)}", pytrace=False)


def tail(path: Path, max_chars: int = 6000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return text if len(text) <= max_chars else "...\n" + text[-max_chars:]


def stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
    """Stops one child process that this test started: sig, a bounded wait, then SIGKILL."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


class Tailgate:
    """`tailgate serve` on loopback ports with a file: downstream in a temporary directory."""

    def __init__(self, workdir: Path, config_text: str, policies: Path | None = None,
                 config_path: Path | None = None) -> None:
        self.workdir = workdir
        self.grpc_port, self.http_port, self.admin_port = free_ports(3)
        self.config_path = config_path or workdir / "tailgate.yaml"
        if config_path is None:
            self.config_path.write_text(config_text)
        self.policies = policies
        self.log = workdir / "tailgate.log"
        self.out = workdir / "kept.jsonl"
        self.proc: subprocess.Popen | None = None

    @property
    def admin(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    def command(self) -> list[str]:
        cmd = [str(tailgate_binary()), "serve", "--config", str(self.config_path),
               "--grpc-listen", f"127.0.0.1:{self.grpc_port}", "--http-listen", f"127.0.0.1:{self.http_port}",
               "--admin-listen", self.admin, "--downstream", f"file:{self.out}"]
        if self.policies is not None:
            cmd += ["--policies", str(self.policies)]
        return cmd

    def start(self, timeout: float = 60) -> "Tailgate":
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.workdir)
        wait_http(f"http://{self.admin}/readyz", self.proc, timeout, self.log)
        return self

    def stop(self) -> int | None:
        return stop(self.proc)


class Prometheus:
    """The Debian `prometheus` binary on 127.0.0.1 with a temporary data directory."""

    def __init__(self, workdir: Path, config_text: str) -> None:
        self.workdir = workdir
        (self.port,) = free_ports(1)
        self.config = workdir / "prometheus.yml"
        self.config.write_text(config_text)
        self.log = workdir / "prometheus.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> "Prometheus":
        binary = tool("prometheus", True, "apt-get install -y prometheus")
        cmd = [binary, f"--config.file={self.config}", f"--storage.tsdb.path={self.workdir / 'data'}",
               f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h",
               "--log.level=warn"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.workdir)
        wait_http(f"{self.url}/-/ready", self.proc, timeout, self.log)
        return self

    def api(self, path: str, **params) -> dict:
        response = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        return body

    def stop(self) -> int | None:
        return stop(self.proc)
