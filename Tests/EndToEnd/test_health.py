"""Health endpoints for orchestrators and load balancers: /livez, /readyz (503 while draining at shutdown), /version
on the admin listener, and the gRPC health service (grpc.health.v1.Health/Check) on the OTLP/gRPC port."""

from __future__ import annotations

import signal
import time

import grpc
import requests

from agent import run_agent
from conftest import TailgateProcess, free_ports, tailgate_binary

CHECK = "/grpc.health.v1.Health/Check"


def grpc_health(endpoint: str) -> int:
    """HealthCheckResponse.status (1 SERVING, 2 NOT_SERVING) for the empty service name."""
    with grpc.insecure_channel(endpoint) as channel:
        call = channel.unary_unary(CHECK, request_serializer=None, response_deserializer=None)
        reply = call(b"", timeout=5)
    assert reply[:1] == b"\x08", reply
    return reply[1]


def test_probes_while_running(tailgate):
    base = f"http://127.0.0.1:{tailgate.metrics_port}"
    assert requests.get(f"{base}/livez", timeout=5).status_code == 200
    ready = requests.get(f"{base}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.text.strip() == "ready"
    assert requests.get(f"{base}/version", timeout=5).json()["version"]
    assert requests.get(f"{base}/metrics", timeout=5).status_code == 200
    assert requests.get(f"{base}/nope", timeout=5).status_code == 404
    assert grpc_health(tailgate.grpc_endpoint) == 1


def test_readyz_is_503_while_draining(tmp_path, request):
    (down_port,) = free_ports(1)  # nothing listens there: the shutdown spends its budget trying to flush
    config = "shutdown_timeout: 6s\nbuffer: {wait_after_root: 10m, idle_timeout: 10m}\n"
    tg = TailgateProcess(tailgate_binary(), tmp_path, down_port, config_text=config)
    request.node._tailgates = [tg]
    tg.start()
    try:
        base = f"http://127.0.0.1:{tg.metrics_port}"
        assert requests.get(f"{base}/readyz", timeout=5).status_code == 200
        assert run_agent("grpc", tg.grpc_endpoint, 20, seed=3).ok  # buffered, to be flushed at shutdown
        tg.proc.send_signal(signal.SIGTERM)
        statuses = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and tg.proc.poll() is None and 503 not in statuses:
            try:
                statuses.append(requests.get(f"{base}/readyz", timeout=1).status_code)
            except requests.RequestException:
                break
            time.sleep(0.05)
        assert 503 in statuses, (statuses, tg.log_tail())
    finally:
        tg.kill()


def test_metrics_exposition_has_build_policies_process_and_shape_metrics(tailgate):
    """/metrics parses (promtool: no problem but swift-metrics' missing HELP lines), and carries the build and
    policies info metrics, the process metrics and the per-trace histograms after traces were decided."""
    import re
    import shutil
    import subprocess

    run_agent("grpc", tailgate.grpc_endpoint, n_traces=5, seed=3)
    base = f"http://127.0.0.1:{tailgate.metrics_port}/metrics"
    deadline = time.monotonic() + 20
    text = ""
    while time.monotonic() < deadline:
        text = requests.get(base, timeout=5).text
        m = re.search(r"^tailgate_trace_spans_count (\d+)", text, re.M)
        if m and int(m.group(1)) >= 5:
            break
        time.sleep(0.2)
    assert re.search(r"^tailgate_trace_spans_count (\d+)", text, re.M), text[:2000]
    assert int(re.search(r"^tailgate_trace_spans_count (\d+)", text, re.M).group(1)) >= 5
    assert re.search(r'^tailgate_trace_spans_bucket\{le="\+Inf"\} \d+', text, re.M)
    assert re.search(r"^tailgate_trace_duration_seconds_count \d+", text, re.M)
    # The binary allocates through tcmalloc (linked, see Package.swift): the label names the library malloc resolved to.
    assert re.search(r'^tailgate_build_info\{version="[^"]+",commit="[^"]+",allocator="libtcmalloc_minimal\.so\.4"\} 1$', text, re.M), \
        re.search(r"^tailgate_build_info.*$", text, re.M)
    policies_hash = re.search(r'^tailgate_policies_info\{hash="([0-9a-f]+)"\} 1$', text, re.M)
    assert policies_hash, "tailgate_policies_info missing"
    # The info label names the same hash the older gauge carries (its low 52 bits).
    gauge = float(re.search(r"^tailgate_policies_hash (\S+)", text, re.M).group(1))
    assert int(policies_hash.group(1), 16) & ((1 << 52) - 1) == int(gauge)
    rss = float(re.search(r"^process_resident_memory_bytes (\S+)", text, re.M).group(1))
    fds = float(re.search(r"^process_open_fds (\S+)", text, re.M).group(1))
    start = float(re.search(r"^process_start_time_seconds (\S+)", text, re.M).group(1))
    cpu = float(re.search(r"^process_cpu_seconds_total (\S+)", text, re.M).group(1))
    assert 1 << 20 < rss < 8 << 30 and 3 <= fds < 10_000 and cpu > 0
    assert abs(start - time.time()) < 3600, start
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing (make deps installs Debian's prometheus)"
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    problems = [line for line in (check.stdout + check.stderr).splitlines() if line and not line.endswith("no help text")]
    assert problems == [], problems
