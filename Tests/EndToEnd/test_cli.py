"""The command line: `tailgate check`, configuration errors, and the embedded file: downstream."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import requests

from conftest import POLICIES, REPO, free_ports, tailgate_binary, _port_open


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([str(tailgate_binary()), *args], capture_output=True, text=True, timeout=timeout)


def test_check_accepts_every_shipped_policies_file():
    files = sorted(str(p) for p in (REPO / "policies").glob("*.yaml"))
    assert files
    result = run("check", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{POLICIES}: ok" in result.stdout


def test_check_reports_every_mistake_with_position(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "policies:\n"
        "  - name: errors\n"
        "    type: status_cod\n"
        "  - name: sample\n"
        "    type: probabilistic\n"
        "    probabilistic: {sampling_percentage: 250}\n"
    )
    result = run("check", str(bad))
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert lines == [
        f"{bad}:3:11: error: unknown policy type 'status_cod'; did you mean 'status_code'?",
        f"{bad}:6:42: error: sampling_percentage must be between 0 and 100, got 250",
    ]


def test_serve_refuses_an_invalid_configuration(tmp_path):
    config = tmp_path / "tailgate.yaml"
    config.write_text("buffer:\n  idle_timout: 5s\n")
    result = run("serve", "--config", str(config), "--grpc-listen", "off", "--http-listen", "off",
                 "--metrics-listen", "off")
    assert result.returncode == 2
    assert f"{config}:2:3: error: unknown key 'idle_timout' in buffer; did you mean 'idle_timeout'?" in result.stderr


def test_file_downstream_writes_otlp_json_lines(tmp_path):
    (http_port,) = free_ports(1)
    out = tmp_path / "kept.jsonl"
    proc = subprocess.Popen(
        [str(tailgate_binary()), "serve", "--grpc-listen", "off", "--metrics-listen", "off",
         "--http-listen", f"127.0.0.1:{http_port}", "--downstream", f"file:{out}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not _port_open(http_port):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "tailgate did not start"
            time.sleep(0.1)
        trace_id = "5b8efff798038103d269b633813fc60c"
        body = {"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "demo"}}]},
            "scopeSpans": [{"scope": {"name": "demo"}, "spans": [
                {"traceId": trace_id, "spanId": "eee19b7ec3c1b174", "name": "agent.run", "kind": 1,
                 "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000",
                 "status": {"code": 2, "message": "boom"}},
            ]}],
        }]}
        response = requests.post(f"http://127.0.0.1:{http_port}/v1/traces", json=body, timeout=10)
        assert response.status_code == 200, response.text
        proc.send_signal(signal.SIGTERM)  # shutdown decides the buffered trace (an error: kept) and flushes
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = out.read_text().splitlines()
    assert len(lines) == 1
    written = json.loads(lines[0])
    span = written["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == trace_id
    assert span["status"] == {"code": 2, "message": "boom"}
    assert span["startTimeUnixNano"] == "1700000000000000000"
    assert written["resourceSpans"][0]["resource"]["attributes"][0]["value"] == {"stringValue": "demo"}
