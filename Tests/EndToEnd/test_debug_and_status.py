"""Why was this trace kept? GET /debug/traces/{id}, `tailgate explain`, GET /debug/status and the status page at /
on the admin listener, with traces sent by the real OpenTelemetry Python SDK, and the page loaded in headless Chromium.

Policies (policies/default.yaml): errors, expensive (10,000 tokens), baseline (10 % by XXH3 of the trace ID).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
import xxhash
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Status, StatusCode

from agent import make_exporter, run_agent
from conftest import POLICIES, TailgateProcess, free_ports, tailgate_binary

HASH_THRESHOLD = int(10 / 100 * 2**64)
WAIT_AFTER_ROOT_S = 6
# Long enough to look at a trace while it is buffered (wait_after_root), short enough for a quick test.
CONFIG = f"""\
buffer:
  wait_after_root: {WAIT_AFTER_ROOT_S}s
  idle_timeout: 20s
  max_trace_age: 60s
forwarder:
  batch_timeout: 100ms
"""
DECISION_TIMEOUT_S = 30.0


def hash_selected(trace_id_hex: str) -> bool:
    return xxhash.xxh3_64_intdigest(bytes.fromhex(trace_id_hex), seed=0) < HASH_THRESHOLD


class FixedIds(IdGenerator):
    """Trace IDs from a list (in order); span IDs counting up."""

    def __init__(self, trace_ids: list[int]) -> None:
        self._trace_ids = list(trace_ids)
        self._span = 0x1000
        self._lock = threading.Lock()

    def generate_trace_id(self) -> int:
        with self._lock:
            return self._trace_ids.pop(0)

    def generate_span_id(self) -> int:
        with self._lock:
            self._span += 1
            return self._span

    def is_trace_id_random(self) -> bool:
        return True


def ids(seed: int) -> tuple[str, str, str]:
    """An error trace's ID, an ordinary trace's ID outside the 10 % share, and an ID never sent."""
    import random

    rng = random.Random(seed)
    chosen = []
    while len(chosen) < 3:
        tid = f"{rng.getrandbits(128):032x}"
        if not hash_selected(tid):
            chosen.append(tid)
    return chosen[0], chosen[1], chosen[2]


def send_two_traces(endpoint: str, error_id: str, ordinary_id: str) -> None:
    """Through the real SDK (OTLP/gRPC): an agent run whose LLM call failed, and an ordinary one (500 tokens)."""
    provider = TracerProvider(resource=Resource.create({"service.name": "agent"}),
                              id_generator=FixedIds([int(error_id, 16), int(ordinary_id, 16)]), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(make_exporter("grpc", endpoint, gzip=False)))
    tracer = provider.get_tracer("tailgate.e2e.debug")
    try:
        with tracer.start_as_current_span("agent.run"):
            with tracer.start_as_current_span("llm.call") as llm:
                llm.set_attribute("gen_ai.usage.input_tokens", 120)
                llm.set_status(Status(StatusCode.ERROR, "rate limited"))
        with tracer.start_as_current_span("agent.run"):
            with tracer.start_as_current_span("llm.call") as llm:
                llm.set_attribute("gen_ai.usage.input_tokens", 400)
                llm.set_attribute("gen_ai.usage.output_tokens", 100)
    finally:
        provider.force_flush(30_000)
        provider.shutdown()


def debug(tg: TailgateProcess, trace_id: str) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{tg.metrics_port}/debug/traces/{trace_id}", timeout=10)


def explain(tg: TailgateProcess | None, *args: str, port: int | None = None) -> subprocess.CompletedProcess:
    admin = f"127.0.0.1:{port if port is not None else tg.metrics_port}"
    return subprocess.run([str(tailgate_binary()), "explain", *args, "--admin", admin],
                          capture_output=True, text=True, timeout=30)


def wait_for_state(tg: TailgateProcess, trace_id: str, state: str, timeout: float = DECISION_TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout
    answer: dict = {}
    while time.monotonic() < deadline:
        answer = debug(tg, trace_id).json()
        if answer["state"] == state:
            return answer
        time.sleep(0.2)
    raise AssertionError(f"{trace_id} not {state} within {timeout:.0f}s: {answer}\n{tg.log_tail()}")


@pytest.fixture
def tg(request, receiver, tmp_path):
    process = TailgateProcess(tailgate_binary(), tmp_path, receiver.port, config_text=CONFIG)
    request.node._tailgates = getattr(request.node, "_tailgates", []) + [process]
    process.start()
    yield process
    process.terminate()


def test_a_trace_is_explained_while_buffered_and_once_decided(tg, receiver):
    error_id, ordinary_id, unknown_id = ids(seed=13)
    started = time.monotonic()
    send_two_traces(tg.grpc_endpoint, error_id, ordinary_id)

    # Buffered: both spans of each trace are in, the root arrived, the decision is due wait_after_root later.
    answer = debug(tg, error_id)
    elapsed = time.monotonic() - started
    assert elapsed < WAIT_AFTER_ROOT_S - 1, f"too slow to see the trace buffered ({elapsed:.1f}s)"
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    a = answer.json()
    assert a["trace_id"] == error_id and a["state"] == "buffered", a
    assert a["spans"] == 2 and a["bytes"] > 0 and a["root_seen"] is True and a["complete"] is True
    assert set(a["statuses"]) == {"unset", "error"}
    assert a["missing_parents"] == {"local": 0, "remote": 0, "of_which_unknown_locality": 0}
    assert 0 <= a["first_seen_age_seconds"] < WAIT_AFTER_ROOT_S and a["last_seen_age_seconds"] <= a["first_seen_age_seconds"]
    assert a["decision"]["trigger"] == "root" and 0 < a["decision"]["due_in_seconds"] <= WAIT_AFTER_ROOT_S
    assert [(p["name"], p["type"]) for p in a["policies"]] == [
        ("errors", "status_code"), ("expensive", "token_usage"), ("baseline", "probabilistic")]
    assert [p["verdict"] for p in a["policies"]] == ["keep", "no", "no"]
    assert a["policies"][2]["chance"] == 0.1
    assert a["would"]["keep"] is True and a["would"]["policy"] == "errors"
    assert a["would"]["weight"] == {"kind": "certain", "probability": 1}
    assert a["would"]["text"] == "would keep by policy 'errors'"
    assert "would keep by policy 'errors'" in a["text"] and a["text"].startswith("buffered in memory: 2 spans")
    # The GenAI token rule as the decision will apply it, and the cost by the built-in price table (no model: $0).
    assert a["gen_ai"] == {"spans": 1, "tokens": 120, "cost_usd": 0}, a
    assert "120 tokens" in a["text"]

    o = debug(tg, ordinary_id).json()
    assert o["state"] == "buffered" and o["statuses"] == ["unset"], o
    assert [p["verdict"] for p in o["policies"]] == ["no", "no", "no"]
    assert o["would"] == {"keep": False, "policy": None, "weight": None, "text": "would drop: no policy matched"}
    assert o["gen_ai"]["tokens"] == 500, o

    cli = explain(tg, error_id)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert f"trace {error_id}: buffered" in cli.stdout
    assert re.search(r"errors \(status_code\)\s+keep", cli.stdout), cli.stdout
    assert "→ would keep by policy 'errors'" in cli.stdout
    cli = explain(tg, ordinary_id)
    assert cli.returncode == 0 and "→ would drop: no policy matched" in cli.stdout, cli.stdout + cli.stderr

    # Decided: the error trace kept by the errors policy (and delivered), the ordinary one dropped.
    k = wait_for_state(tg, error_id, "kept")
    # The decision cache remembers the trigger and when the decision was made.
    age = k["decision"].pop("decided_age_seconds")
    decided_at = k["decision"].pop("decided_at")
    assert k["decision"] == {"keep": True, "policy": "errors", "weight": {"kind": "certain", "probability": 1},
                             "trigger": "root"}, k
    assert 0 <= age < DECISION_TIMEOUT_S and re.fullmatch(r"\d{4}-\d\d-\d\dT.*Z", decided_at), (age, decided_at)
    assert k["text"].startswith("kept by policy 'errors' (certain; trigger: root, ") and k["text"].endswith(" ago)"), k
    assert receiver.wait_until(lambda r: len(r.trace(error_id)) == 2, timeout=DECISION_TIMEOUT_S)
    assert all(s.attributes.get("tailgate.policy") == "errors" for s in receiver.trace(error_id))
    d = wait_for_state(tg, ordinary_id, "dropped")
    assert d["decision"].pop("decided_age_seconds") >= 0 and d["decision"].pop("decided_at")
    assert d["decision"] == {"keep": False, "policy": None, "weight": None, "trigger": "root"}, d
    assert d["text"].startswith("dropped: no policy matched (trigger: root, ")
    assert receiver.trace(ordinary_id) == []

    cli = explain(tg, error_id)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert f"trace {error_id}: kept" in cli.stdout and "kept by policy 'errors'" in cli.stdout
    assert re.search(r"decision: keep, policy: errors, weight: certain, trigger: root, [\d.]+ s ago", cli.stdout), cli.stdout
    cli = explain(tg, ordinary_id.upper())
    assert cli.returncode == 0 and f"trace {ordinary_id}: dropped" in cli.stdout, cli.stdout + cli.stderr
    cli = explain(tg, ordinary_id, "--json")
    assert cli.returncode == 0 and json.loads(cli.stdout)["state"] == "dropped"

    # Never seen: 404 with state unknown; explain exits 1.
    u = debug(tg, unknown_id)
    assert u.status_code == 404, u.text
    assert u.json()["state"] == "unknown" and u.json()["trace_id"] == unknown_id
    assert "not seen (or forgotten after 360 s" in u.json()["text"]  # max_trace_age 60 s + 5 min
    cli = explain(tg, unknown_id)
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert f"trace {unknown_id}: unknown" in cli.stdout and "not seen" in cli.stdout


class RecordingTailgate(TailgateProcess):
    """`tailgate serve --record FILE`."""

    def __init__(self, *args, recording: Path, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.recording = recording

    def command(self) -> list[str]:
        return super().command() + ["--record", str(self.recording)]


def explain_recording(trace_id: str, recording: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(tailgate_binary()), "explain", trace_id, "--recording", str(recording), *args],
                          capture_output=True, text=True, timeout=60)


def test_explain_answers_offline_from_a_recording_as_the_live_proxy_decided(request, receiver, tmp_path):
    recording = tmp_path / "run.tgrec"
    process = RecordingTailgate(tailgate_binary(), tmp_path, receiver.port, config_text=CONFIG, recording=recording)
    request.node._tailgates = getattr(request.node, "_tailgates", []) + [process]
    process.start()
    error_id, ordinary_id, unknown_id = ids(seed=31)
    try:
        send_two_traces(process.grpc_endpoint, error_id, ordinary_id)
        live = {error_id: wait_for_state(process, error_id, "kept"), ordinary_id: wait_for_state(process, ordinary_id, "dropped")}
    finally:
        assert process.terminate() == 0, process.log_tail()
    assert recording.stat().st_size > 8

    for trace_id, tokens, verdicts in ((error_id, 120, ["keep", "no", "no"]), (ordinary_id, 500, ["no", "no", "no"])):
        cli = explain_recording(trace_id, recording, "--config", str(process.config_path), "--policies", str(POLICIES), "--json")
        assert cli.returncode == 0, cli.stdout + cli.stderr
        offline = json.loads(cli.stdout)
        decided = live[trace_id]
        # The same decision as the live proxy, with its trigger, and what only the replay can say about its spans.
        assert offline["state"] == decided["state"], (offline, decided)
        for key in ("keep", "policy", "weight", "trigger"):
            assert offline["decision"][key] == decided["decision"][key], (key, offline, decided)
        assert offline["decision"]["decided_after_first_span_seconds"] >= WAIT_AFTER_ROOT_S - 1, offline
        assert offline["spans"] == 2 and offline["root_seen"] is True and offline["complete"] is True, offline
        assert offline["bytes"] > 0 and offline["gen_ai"]["tokens"] == tokens, offline
        assert [p["name"] for p in offline["policies"]] == ["errors", "expensive", "baseline"]
        assert [p["verdict"] for p in offline["policies"]] == verdicts, offline
        assert offline["source"]["requests_with_the_trace"] == 2 and offline["source"]["recording"] == str(recording)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT.*Z", offline["first_seen"])

    # Without --policies the built-in defaults (the same three policies): the error trace is kept by errors.
    cli = explain_recording(error_id, recording)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert f"trace {error_id}: kept" in cli.stdout and "kept by policy 'errors'" in cli.stdout, cli.stdout
    assert re.search(r"errors \(status_code\)\s+keep", cli.stdout) and "policies, evaluated at the decision:" in cli.stdout
    assert "decision: keep, policy: errors, weight: certain, trigger: root" in cli.stdout, cli.stdout
    assert "GenAI: 1 span(s), 120 tokens" in cli.stdout and "replayed from" in cli.stdout, cli.stdout

    # Not in the recording: exit 1; a file that is no recording: exit 2.
    cli = explain_recording(unknown_id, recording)
    assert cli.returncode == 1 and f"trace {unknown_id}: unknown" in cli.stdout and "not in the recording" in cli.stdout, cli.stdout
    garbage = tmp_path / "garbage.tgrec"
    garbage.write_bytes(b"TGREC1\n\0" + b"\x01" * 7)
    cli = explain_recording(error_id, garbage)
    assert cli.returncode == 2 and "truncated" in cli.stderr, cli.stdout + cli.stderr
    cli = explain_recording(error_id, tmp_path / "missing.tgrec")
    assert cli.returncode == 2 and "cannot read" in cli.stderr, cli.stdout + cli.stderr


@pytest.mark.parametrize("bad, why", [
    ("abc", "got 3 characters"),
    ("z" * 32, "not a hexadecimal digit"),
    ("0" * 32, "all-zero"),
    ("4bf92f3577b34da6a3ce929d0e0e47361", "got 33 characters"),
    ("", "a trace ID is needed"),
])
def test_a_malformed_trace_id_is_refused_with_the_reason(tailgate, bad, why):
    response = requests.get(f"http://127.0.0.1:{tailgate.metrics_port}/debug/traces/{bad}", timeout=10)
    assert response.status_code == 400, response.text
    assert why in response.json()["error"], response.json()


def test_explain_refuses_a_bad_id_and_says_when_tailgate_cannot_be_reached():
    bad = explain(None, "xyz", port=9)
    assert bad.returncode not in (0, 1, 2) and "32 hexadecimal digits" in bad.stderr, bad.stderr
    (closed,) = free_ports(1)
    down = explain(None, "4bf92f3577b34da6a3ce929d0e0e4736", port=closed)
    assert down.returncode == 2, down.stdout + down.stderr
    assert f"cannot reach the tailgate admin listener at 127.0.0.1:{closed}" in down.stderr


def test_status_json_reads_the_same_numbers_as_metrics(tailgate):
    result = run_agent("grpc", tailgate.grpc_endpoint, n_traces=10, seed=5)
    assert result.ok
    base = f"http://127.0.0.1:{tailgate.metrics_port}"
    received = tailgate.counter("tailgate_spans_received_total")
    assert received == result.spans_created
    status = requests.get(f"{base}/debug/status", timeout=10)
    assert status.status_code == 200 and status.headers["cache-control"] == "no-store"
    s = status.json()
    assert s["spans"]["received"] == received
    assert s["readiness"] == "ready" and s["version"] == requests.get(f"{base}/version", timeout=5).json()["version"]
    assert s["uptime_seconds"] > 0 and re.fullmatch(r"\d{4}-\d\d-\d\dT.*Z", s["started_at"])
    assert [p["name"] for p in s["policies"]["list"]] == ["errors", "expensive", "baseline"]
    hash_label = re.search(r'^tailgate_policies_info\{hash="([0-9a-f]+)"\}', tailgate.metrics_text(), re.M).group(1)
    assert s["policies"]["hash"] == hash_label
    assert s["buffer"]["max_bytes"] == 512 << 20 and s["store"] is None
    assert s["forward_queue"]["max_bytes"] == 256 << 20
    assert s["downstream"]["target"] and s["downstream"]["state"] in ("idle", "ok")
    # Once everything is decided, the per-policy counts add up to the traces sent.
    deadline = time.monotonic() + DECISION_TIMEOUT_S
    while time.monotonic() < deadline:
        s = requests.get(f"{base}/debug/status", timeout=10).json()
        decided = sum(p["kept"] + p["dropped"] for p in s["policies"]["list"]) + s["policies"]["no_policy_matched"]
        if decided == 10 and s["buffer"]["traces"] == 0:
            break
        time.sleep(0.2)
    assert decided == 10, s
    assert s["spans"]["kept"] == (tailgate.counter("tailgate_spans_kept_total") or 0)
    if s["spans"]["kept"]:
        # Kept spans go downstream: the status shows a delivery.
        deadline = time.monotonic() + DECISION_TIMEOUT_S
        while time.monotonic() < deadline and s["downstream"]["state"] != "ok":
            time.sleep(0.2)
            s = requests.get(f"{base}/debug/status", timeout=10).json()
        assert s["downstream"]["state"] == "ok" and s["downstream"]["last_success_age_seconds"] is not None, s
        assert 0 < s["spans"]["forwarded"] <= tailgate.counter("tailgate_spans_forwarded_total")


# --------------------------------------------------------------------------
# The status page in a real browser


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def render_page(url: str, workdir: Path, screenshot: Path | None = None) -> str:
    """The DOM after the page's scripts ran (headless Chromium), optionally with a screenshot."""
    browser = chromium_binary()
    assert browser
    profile = workdir / "chromium-profile"
    common = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}",
              "--virtual-time-budget=8000", "--window-size=1280,1600"]
    if screenshot is not None:
        shot = subprocess.run(common + [f"--screenshot={screenshot}", url], capture_output=True, text=True, timeout=120)
        assert shot.returncode == 0, shot.stderr[-3000:]
    dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-3000:]
    return dom.stdout


def element_text(dom: str, element_id: str) -> str:
    m = re.search(rf'id="{re.escape(element_id)}"[^>]*>(.*?)</', dom, re.S)
    assert m, f"no element #{element_id} in the DOM:\n{dom[:4000]}"
    return html.unescape(m.group(1)).strip()


@pytest.mark.skipif(chromium_binary() is None,
                    reason="chromium is not installed (apt-get install chromium; .ci/run installs it)")
def test_status_page_in_headless_chromium_shows_what_it_fetched(tg, receiver, tmp_path):
    result = run_agent("grpc", tg.grpc_endpoint, n_traces=12, seed=8)
    assert result.ok
    error_id, ordinary_id, _ = ids(seed=21)
    send_two_traces(tg.grpc_endpoint, error_id, ordinary_id)
    wait_for_state(tg, error_id, "kept")
    wait_for_state(tg, ordinary_id, "dropped")
    base = f"http://127.0.0.1:{tg.metrics_port}"
    deadline = time.monotonic() + DECISION_TIMEOUT_S
    while requests.get(f"{base}/debug/status", timeout=10).json()["buffer"]["traces"] > 0:
        assert time.monotonic() < deadline, "traces still buffered"
        time.sleep(0.2)
    received = tg.counter("tailgate_spans_received_total")
    assert received == result.spans_created + 4

    page = requests.get(f"{base}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text), "the page loads nothing from elsewhere"
    assert "default-src 'none'" in page.headers["content-security-policy"]

    artifacts = Path(os.environ.get("TAILGATE_TEST_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "status-page.png"
    dom = render_page(f"{base}/?trace={error_id}", tmp_path, screenshot=screenshot)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The numbers the page fetched from /debug/status, as /metrics says them.
    assert element_text(dom, "error") == "", element_text(dom, "error")
    assert int(element_text(dom, "spans-received")) == received
    assert int(element_text(dom, "spans-kept")) == int(tg.counter("tailgate_spans_kept_total"))
    assert element_text(dom, "readiness") == "ready"
    assert element_text(dom, "version") == requests.get(f"{base}/version", timeout=5).json()["version"]
    assert element_text(dom, "policies-file").endswith("default.yaml")
    for name in ("errors", "expensive", "baseline"):
        assert f'data-policy="{name}"' in dom, name
    errors_row = re.search(r'data-policy="errors"[^>]*>(.*?)</tr>', dom, re.S).group(1)
    kept_by_errors = [int(n) for n in re.findall(r'class="n">(\d+)<', errors_row)][0]
    metrics = tg.metrics_text()
    expected = re.search(r'^tailgate_traces_decided_total\{[^}]*policy="errors"[^}]*decision="keep"[^}]*\} (\S+)|'
                         r'^tailgate_traces_decided_total\{[^}]*decision="keep"[^}]*policy="errors"[^}]*\} (\S+)',
                         metrics, re.M)
    assert expected and kept_by_errors == int(float(expected.group(1) or expected.group(2))) >= 1
    # The lookup form, filled from ?trace=, asked /debug/traces/{id}.
    assert element_text(dom, "lookup-text").startswith("kept: kept by policy 'errors'")
    # The last decisions list shows the error trace kept by errors (trigger root, 2 spans), its ID linking to its
    # lookup, and the ordinary one dropped.
    row = re.search(rf'<tr data-trace="{error_id}">(.*?)</tr>', dom, re.S)
    assert row, dom[dom.find('id="last-decisions"'):][:3000]
    cells = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)]
    assert cells[1:] == [error_id, "keep", "errors", "root", "2"], cells
    assert f'href="?trace={error_id}"' in row.group(1)
    row = re.search(rf'<tr data-trace="{ordinary_id}">(.*?)</tr>', dom, re.S)
    assert row and ">drop<" in row.group(1) and ">none<" in row.group(1), row and row.group(1)
    status = requests.get(f"{base}/debug/status", timeout=10).json()
    last = {d["trace_id"]: d for d in status["last_decisions"]}
    assert last[error_id]["decision"] == "keep" and last[error_id]["policy"] == "errors" and last[error_id]["spans"] == 2
    assert last[ordinary_id]["decision"] == "drop" and last[ordinary_id]["trigger"] == "root"
    assert len(status["last_decisions"]) == min(status["last_decisions_capacity"], 14)  # 12 agent runs + 2
