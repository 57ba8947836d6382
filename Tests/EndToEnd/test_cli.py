"""The command line: `tailgate check`, configuration errors, the embedded file: downstream, and `--log-format json`."""

from __future__ import annotations

import json
import os
import re
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


def test_serve_log_format_json_writes_one_json_object_per_line(tmp_path):
    # A format other than text or json is refused before anything starts, naming where it came from.
    bad_flag = run("serve", "--log-format", "xml", "--grpc-listen", "off", "--http-listen", "off",
                   "--admin-listen", "off")
    assert bad_flag.returncode != 0
    assert "--log-format" in bad_flag.stderr and "text" in bad_flag.stderr and "json" in bad_flag.stderr
    bad_env = subprocess.run([str(tailgate_binary()), "serve", "--grpc-listen", "off", "--http-listen", "off",
                              "--admin-listen", "off"], capture_output=True, text=True, timeout=30,
                             env={**os.environ, "TAILGATE_LOG_FORMAT": "logfmt"})
    assert bad_env.returncode != 0
    assert "TAILGATE_LOG_FORMAT" in bad_env.stderr and "text" in bad_env.stderr and "json" in bad_env.stderr

    grpc_port, http_port, admin_port = free_ports(3)
    out = tmp_path / "kept.jsonl"
    proc = subprocess.Popen(
        [str(tailgate_binary()), "serve", "--log-format", "json",
         "--grpc-listen", f"127.0.0.1:{grpc_port}", "--http-listen", f"127.0.0.1:{http_port}",
         "--admin-listen", f"127.0.0.1:{admin_port}", "--downstream", f"file:{out}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not all(_port_open(p) for p in (grpc_port, http_port, admin_port)):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "tailgate did not start"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    text = stderr.decode("utf-8")  # valid UTF-8 throughout
    assert text.endswith("\n")
    records = []
    for line in text.splitlines():
        record = json.loads(line)  # every line is one JSON object: no text line, no line split or interleaved
        assert isinstance(record, dict), line
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", record["ts"]), line
        assert record["level"] in {"trace", "debug", "info", "notice", "warning", "error", "critical"}, line
        for field in ("msg", "logger", "source"):
            assert isinstance(record[field], str) and record[field], line
        records.append(record)

    started = [r for r in records if r["msg"] == "tailgate started"]
    assert len(started) == 1, text
    assert started[0]["level"] == "info" and started[0]["logger"] == "tailgate"
    assert started[0]["source"] == "TailgateRuntime"
    for port in (grpc_port, http_port, admin_port):
        assert f"127.0.0.1:{port}" in started[0]["listening"]
    assert started[0]["downstream"] and started[0]["version"]

    stopped = [r for r in records if r["msg"] == "tailgate stopped"]
    assert len(stopped) == 1, text
    assert stopped[0]["level"] == "notice"
    assert stopped[0]["spans_lost"] == "0"
    assert stopped[0]["buffered_traces_left"] == "0"
    assert records.index(started[0]) < records.index(stopped[0])
