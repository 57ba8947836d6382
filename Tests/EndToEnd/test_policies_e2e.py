"""Policies end to end: hot reload (SIGHUP and file watch), kept spans that say why, dry run,
`tailgate simulate` (checked against an independent count of the recording) and `tailgate import-otel`.

SDK -> tailgate -> a receiver that also keeps each span's raw protobuf (trace_state, typed attributes).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import xxhash

from conftest import POLICIES, REPO, TailgateProcess, tailgate_binary
from receiver import Receiver
from test_e2e import (SAMPLE_PERCENT, TOKEN_THRESHOLD, assert_clean_exit, describe, generate, hash_selected,
                      must_keep, tokens_by_rule)

RECORDING = REPO / "loadtest" / "recordings" / "agents-3k.jsonl.gz"
# OpenTelemetry's rejection threshold for keeping 10%: round((1 - 0.1) * 2^56), as 14 hex digits.
TH_10_PERCENT = f"{(2**56 * 9 + 5) // 10:014x}"  # exact integer rounding
assert TH_10_PERCENT == "e6666666666666"
BOUNDED_S = 10.0  # any wait for a metric or a log line
FILE_WATCH_PICKUP_S = 3.0  # a changed file must be in force this soon with a 200ms watch interval

# Windows long enough that nothing is decided before the test sends SIGTERM (the tests take a few seconds).
HOLD_CONFIG = """\
buffer:
  wait_after_root: 30s
  idle_timeout: 30s
  max_trace_age: 60s
forwarder:
  batch_timeout: 100ms
policies_reload_interval: {interval}
"""
FAST_CONFIG = """\
buffer:
  wait_after_root: 300ms
  idle_timeout: 2s
  max_trace_age: 30s
forwarder:
  batch_timeout: 100ms
"""

ERRORS_ONLY = """\
policies:
  - name: only-errors
    type: status_code
    status_code:
      status_codes: [ERROR]
"""
BROKEN = """\
policies:
  - name: everything
    type: always_sampel
"""
KEEP_ALL = """\
# keeps every trace from now on
policies:
  - name: keep-all
    type: always_sample
"""


# --------------------------------------------------------------------------
# Harness


class RawReceiver(Receiver):
    """conftest's receiver, also keeping every span's raw protobuf (trace_state and typed attribute values)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.raw: dict[tuple[str, str], list] = defaultdict(list)  # (trace id, span id) -> [Span]

    def _record(self, request) -> None:
        spans = [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
        with self._cond:
            for span in spans:
                self.raw[(span.trace_id.hex(), span.span_id.hex())].append(span)
        super()._record(request)

    def raw_spans(self, trace_id: str) -> list:
        with self._cond:
            return [s for (tid, _), spans in self.raw.items() if tid == trace_id for s in spans]


@pytest.fixture
def receiver():  # overrides conftest's for this module (so conftest's `tailgate` fixture uses it too)
    rx = RawReceiver()
    rx.start()
    yield rx
    rx.stop()


class PolicyTailgate(TailgateProcess):
    """conftest's TailgateProcess with its own configuration text, policies file and extra flags."""

    def __init__(self, binary, workdir: Path, downstream_port: int, config: str,
                 policies: Path = POLICIES, extra: tuple[str, ...] = ()) -> None:
        super().__init__(binary, workdir, downstream_port)
        self.own_config_path = workdir / "tailgate-policies-e2e.yaml"
        self.own_config_path.write_text(config)
        self.policies_path = policies
        self.extra = list(extra)

    def command(self) -> list[str]:
        command = super().command()
        command[command.index("--config") + 1] = str(self.own_config_path)
        command[command.index("--policies") + 1] = str(self.policies_path)
        return command + self.extra

    def value(self, name: str) -> float:
        """A metric's value summed over its label sets; 0 when absent."""
        return self.counter(name) or 0.0

    def wait_value(self, name: str, want: float, timeout: float = BOUNDED_S) -> float:
        deadline = time.monotonic() + timeout
        while (got := self.value(name)) != want and time.monotonic() < deadline:
            time.sleep(0.05)
        return got

    def wait_log(self, needle: str, timeout: float = BOUNDED_S) -> bool:
        deadline = time.monotonic() + timeout
        while needle not in self.log_text():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


def start_tailgate(request, tmp_path, receiver, config: str, **kwargs) -> PolicyTailgate:
    tg = PolicyTailgate(tailgate_binary(), tmp_path, receiver.port, config, **kwargs)
    request.node._tailgates = getattr(request.node, "_tailgates", []) + [tg]  # logs on failure
    request.addfinalizer(tg.kill)
    tg.start()
    return tg


def write_atomically(path: Path, text: str) -> None:
    """Replaces the file in one step, so a watcher never reads it half written."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def attribute(span, key: str):
    """(kind, value) of a raw span's attribute (the last occurrence wins), or None."""
    found = None
    for kv in span.attributes:
        if kv.key == key:
            kind = kv.value.WhichOneof("value")
            found = (kind, getattr(kv.value, kind) if kind else None)
    return found


def assert_all_arrived_complete(receiver, traces, context: str) -> None:
    received = receiver.traces()
    problems = []
    for t in traces:
        ids = [s.span_id for s in received.get(t.trace_id, [])]
        if sorted(ids) != sorted(t.span_ids):
            problems.append(f"{describe(t)}: received {len(ids)} spans ({len(set(ids))} distinct), "
                            f"missing {len(t.span_ids - set(ids))} of {len(t.span_ids)}")
    unknown = set(received) - {t.trace_id for t in traces}
    assert not problems and not unknown, (
        f"{context}: {len(problems)} of {len(traces)} traces not received exactly once and complete:\n  "
        + "\n  ".join(problems[:15]) + f"\nunknown trace ids: {sorted(unknown)[:10]}")


def send_and_buffer(tg: PolicyTailgate, n: int, seed: int, buffered_before: int):
    """Sends n traces; waits until all are buffered (none decided)."""
    result = generate(tg, "grpc", n=n, seed=seed, gzip=True, rate=None)
    want = buffered_before + len(result.traces)
    got = tg.wait_value("tailgate_traces_buffered", want)
    assert got == want, f"tailgate_traces_buffered = {got}, want {want} (traces were decided or lost early)"
    return result


# --------------------------------------------------------------------------
# 1. Hot reload


def test_reload_on_sighup_rejects_a_broken_file_then_applies_a_new_one(request, tmp_path, receiver):
    policies = tmp_path / "policies.yaml"
    policies.write_text(ERRORS_ONLY)
    tg = start_tailgate(request, tmp_path, receiver, HOLD_CONFIG.format(interval="1h"), policies=policies)
    first = send_and_buffer(tg, 150, seed=611, buffered_before=0)
    hash_before = tg.counter("tailgate_policies_hash")
    assert hash_before is not None, "tailgate_policies_hash missing from /metrics"

    # a. A broken file: rejected with a positioned diagnostic; the proxy keeps serving and loses nothing.
    policies.write_text(BROKEN)
    tg.proc.send_signal(signal.SIGHUP)
    assert tg.wait_value("tailgate_policies_reload_failures_total", 1) == 1, tg.metrics_text()
    needle = f"{policies}:3:11: error: unknown policy type 'always_sampel'"
    assert tg.wait_log(needle), f"no {needle!r} in the log\n{tg.log_tail()}"
    assert tg.alive(), f"tailgate died on SIGHUP with a broken file (exit {tg.proc.poll()})"
    assert tg.value("tailgate_traces_buffered") == len(first.traces), "buffered traces lost on a failed reload"
    assert tg.value("tailgate_policies_reloads_total") == 0
    assert tg.counter("tailgate_policies_hash") == hash_before
    second = send_and_buffer(tg, 150, seed=612, buffered_before=len(first.traces))

    # b. A good file: applied; buffered traces stay buffered and are decided by it.
    policies.write_text(KEEP_ALL)
    tg.proc.send_signal(signal.SIGHUP)
    assert tg.wait_value("tailgate_policies_reloads_total", 1) == 1, tg.log_tail()
    hash_after = tg.counter("tailgate_policies_hash")
    assert hash_after is not None and hash_after != hash_before, (hash_before, hash_after)
    assert tg.value("tailgate_policies_reload_failures_total") == 1
    assert tg.value("tailgate_traces_decided_total") == 0, "traces were decided before SIGTERM"
    third = send_and_buffer(tg, 100, seed=613, buffered_before=len(first.traces) + len(second.traces))
    assert receiver.span_count() == 0

    assert_clean_exit(tg)
    traces = first.traces + second.traces + third.traces
    assert_all_arrived_complete(receiver, traces, "after reloading to always_sample and SIGTERM")
    policies_seen = Counter(s.attributes.get("tailgate.policy") for s in receiver.spans())
    assert set(policies_seen) == {"keep-all"}, f"tailgate.policy values on arriving spans: {dict(policies_seen)}"


def test_reload_when_the_file_changes(request, tmp_path, receiver):
    policies = tmp_path / "policies.yaml"
    policies.write_text(ERRORS_ONLY)
    tg = start_tailgate(request, tmp_path, receiver, HOLD_CONFIG.format(interval="200ms"), policies=policies)
    first = send_and_buffer(tg, 150, seed=621, buffered_before=0)
    hash_before = tg.counter("tailgate_policies_hash")
    time.sleep(0.5)  # a few watch intervals with the file unchanged: no reload
    assert tg.value("tailgate_policies_reloads_total") == 0

    write_atomically(policies, KEEP_ALL)
    changed = time.monotonic()
    got = tg.wait_value("tailgate_policies_reloads_total", 1, timeout=FILE_WATCH_PICKUP_S)
    picked_up_s = time.monotonic() - changed
    assert got == 1, f"the changed file was not reloaded within {FILE_WATCH_PICKUP_S}s\n{tg.log_tail()}"
    assert tg.counter("tailgate_policies_hash") != hash_before
    assert tg.value("tailgate_policies_reload_failures_total") == 0
    print(f"file change picked up after {picked_up_s:.2f}s")

    time.sleep(0.6)  # the same file, looked at again: nothing more to apply
    assert tg.value("tailgate_policies_reloads_total") == 1
    second = send_and_buffer(tg, 100, seed=622, buffered_before=len(first.traces))

    assert_clean_exit(tg)
    assert_all_arrived_complete(receiver, first.traces + second.traces, "after the file watch reload")
    policies_seen = Counter(s.attributes.get("tailgate.policy") for s in receiver.spans())
    assert set(policies_seen) == {"keep-all"}, dict(policies_seen)


# --------------------------------------------------------------------------
# 2. Kept spans say why


def expected_policy(t) -> str | None:
    if t.has_error:
        return "errors"
    if t.total_tokens >= TOKEN_THRESHOLD:
        return "expensive"
    return "baseline" if hash_selected(t.trace_id) else None


def test_kept_spans_carry_the_policy_threshold_and_sample_rate(tailgate, receiver):
    result = generate(tailgate, "grpc", n=800, seed=631, gzip=True, rate=None)
    assert_clean_exit(tailgate)
    kept = [t for t in result.traces if must_keep(t)]
    assert_all_arrived_complete(receiver, kept, "default policies")
    by_policy = Counter(expected_policy(t) for t in kept)
    assert by_policy["errors"] and by_policy["expensive"] and by_policy["baseline"] >= 20, by_policy

    problems = []
    for t in kept:
        policy = expected_policy(t)
        for span in receiver.raw_spans(t.trace_id):
            where = f"{describe(t)} span {span.span_id.hex()} ({span.name})"
            got_policy = attribute(span, "tailgate.policy")
            rate = attribute(span, "tailgate.sample_rate")
            if got_policy != ("string_value", policy):
                problems.append(f"{where}: tailgate.policy {got_policy}, want {policy!r}")
            if policy == "baseline":
                # Hash mode (the default) cannot state a consistent threshold: no th, the weight is the sample rate.
                if "th:" in span.trace_state:
                    problems.append(f"{where}: trace_state {span.trace_state!r} carries a th for a hash-mode keep")
                if rate != ("double_value", 100 / SAMPLE_PERCENT):
                    problems.append(f"{where}: tailgate.sample_rate {rate}, want double 10.0")
            else:
                if "th:" in span.trace_state:
                    problems.append(f"{where}: kept for certain but trace_state is {span.trace_state!r}")
                if rate is not None:
                    problems.append(f"{where}: kept for certain but tailgate.sample_rate is {rate}")
    assert not problems, f"{len(problems)} annotation problems:\n  " + "\n  ".join(problems[:20])


# --------------------------------------------------------------------------
# 3. Dry run


def test_dry_run_forwards_everything_marked_with_the_decision(request, tmp_path, receiver):
    tg = start_tailgate(request, tmp_path, receiver, FAST_CONFIG, extra=("--dry-run",))
    result = generate(tg, "grpc", n=400, seed=641, gzip=True, rate=None)
    assert_clean_exit(tg)
    assert_all_arrived_complete(receiver, result.traces, "dry run")
    problems = []
    for t in result.traces:
        want = "keep" if must_keep(t) else "drop"
        for span in receiver.trace(t.trace_id):
            got = span.attributes.get("tailgate.dry_run.decision")
            if got != want:
                problems.append(f"{describe(t)} span {span.span_id}: tailgate.dry_run.decision {got!r}, want {want!r}")
    decisions = Counter(must_keep(t) for t in result.traces)
    assert decisions[True] and decisions[False], decisions
    assert not problems, f"{len(problems)} wrong marks:\n  " + "\n  ".join(problems[:20])


# --------------------------------------------------------------------------
# 4. simulate


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([str(tailgate_binary()), *args], capture_output=True, text=True, timeout=timeout)


def json_value(value: dict):
    for kind in ("stringValue", "boolValue", "doubleValue"):
        if kind in value:
            return value[kind]
    if "intValue" in value:
        return int(value["intValue"])
    return None


def recorded_traces() -> dict[str, dict]:
    """trace id -> {spans, error, tokens}, computed straight from the recording's OTLP/JSON."""
    traces: dict[str, dict] = defaultdict(lambda: {"spans": 0, "error": False, "tokens": 0})
    with gzip.open(RECORDING, "rt") as lines:
        for line in lines:
            if not line.strip():
                continue
            for rs in json.loads(line).get("resourceSpans", []):
                for ss in rs.get("scopeSpans", []):
                    for span in ss.get("spans", []):
                        t = traces[span["traceId"].lower()]
                        t["spans"] += 1
                        t["error"] |= span.get("status", {}).get("code") in (2, "STATUS_CODE_ERROR")
                        attrs = {a["key"]: json_value(a["value"]) for a in span.get("attributes", [])}
                        t["tokens"] += tokens_by_rule(attrs)
    return dict(traces)


def decide(trace_id: str, t: dict, min_tokens: int, percent: float) -> str | None:
    """The reason a policies file of errors / expensive / baseline keeps a trace (None: dropped)."""
    if t["error"]:
        return "errors"
    if t["tokens"] >= min_tokens:
        return "expensive"
    threshold = int(percent / 100 * 2**64)
    return "baseline" if xxhash.xxh3_64_intdigest(bytes.fromhex(trace_id), seed=0) < threshold else None


def parse_table(text: str) -> dict[str, tuple[int, int]]:
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^(errors|expensive|baseline|\(dropped\)|total)\s+(\d+)\s+(\d+)\s", line)
        if m:
            assert m.group(1) not in rows, f"row {m.group(1)} printed twice:\n{text}"
            rows[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return rows


AGAINST = """\
policies:
  - name: errors
    type: status_code
    status_code: {status_codes: [ERROR]}
  - name: expensive
    type: token_usage
    token_usage: {min_total_tokens: 20000}
  - name: baseline
    type: probabilistic
    probabilistic: {sampling_percentage: 5}
"""


def test_simulate_matches_an_independent_count(tmp_path):
    truth = recorded_traces()
    want = Counter(decide(tid, t, TOKEN_THRESHOLD, SAMPLE_PERCENT) for tid, t in truth.items())
    want_spans = Counter()
    for tid, t in truth.items():
        want_spans[decide(tid, t, TOKEN_THRESHOLD, SAMPLE_PERCENT)] += t["spans"]

    result = run_cli("simulate", str(RECORDING))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = parse_table(result.stdout)
    assert set(rows) == {"errors", "expensive", "baseline", "(dropped)", "total"}, result.stdout
    parts = ("errors", "expensive", "baseline", "(dropped)")
    assert sum(rows[p][0] for p in parts) == rows["total"][0] == len(truth), result.stdout
    assert sum(rows[p][1] for p in parts) == rows["total"][1] == sum(t["spans"] for t in truth.values()), \
        result.stdout
    independent = {p: (want[None if p == "(dropped)" else p], want_spans[None if p == "(dropped)" else p])
                   for p in parts}
    assert {p: rows[p] for p in parts} == independent, \
        f"simulate:\n{result.stdout}\nrecomputed from the JSON (traces, spans): {independent}"

    # --against: how many traces change decision, by category.
    against = tmp_path / "against.yaml"
    against.write_text(AGAINST)
    assert run_cli("check", str(against)).returncode == 0
    result = run_cli("simulate", str(RECORDING), "--against", str(against))
    assert result.returncode == 0, result.stdout + result.stderr
    m = re.search(r"^(\d+) of (\d+) traces change decision", result.stdout, re.M)
    assert m, result.stdout
    changed, total = int(m.group(1)), int(m.group(2))
    categories = {c.group(1): int(c.group(2))
                  for c in re.finditer(r"^\s+((?:keep \(\w+\)|drop) → (?:keep \(\w+\)|drop)): (\d+)\b",
                                       result.stdout, re.M)}
    assert sum(categories.values()) == changed, result.stdout

    want_changes = Counter()
    for tid, t in truth.items():
        a, b = decide(tid, t, TOKEN_THRESHOLD, SAMPLE_PERCENT), decide(tid, t, 20_000, 5)
        if (a is None) != (b is None):
            want_changes[f"{f'keep ({a})' if a else 'drop'} → {f'keep ({b})' if b else 'drop'}"] += 1
    assert total == len(truth) and changed == sum(want_changes.values()) > 0, \
        f"{result.stdout}\nrecomputed: {dict(want_changes)}"
    assert categories == dict(want_changes), f"{result.stdout}\nrecomputed: {dict(want_changes)}"


# --------------------------------------------------------------------------
# 5. import-otel


COLLECTOR = """\
receivers:
  otlp:
    protocols:
      grpc: {endpoint: 127.0.0.1:4317}
processors:
  tail_sampling:
    decision_wait: 10s
    policies:
      - name: errors
        type: status_code
        status_code: {status_codes: [ERROR]}
      - name: baseline
        type: probabilistic
        probabilistic: {sampling_percentage: 10}
      - name: not-health-checks
        type: string_attribute
        string_attribute: {key: http.route, values: [/healthz, /readyz], invert_match: true}
      - name: slow-and-large
        type: and
        and:
          and_sub_policy:
            - name: slow
              type: latency
              latency: {threshold_ms: 5000}
            - name: large
              type: span_count
              span_count: {min_spans: 50}
      - name: big-prompts
        type: ottl_condition
        ottl_condition:
          error_mode: ignore
          span:
            - 'attributes["gen_ai.usage.input_tokens"] > 5000'
exporters:
  otlp:
    endpoint: 127.0.0.1:14317
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [tail_sampling]
      exporters: [otlp]
"""


def test_import_otel_converts_a_collector_config(tmp_path):
    collector = tmp_path / "collector.yaml"
    collector.write_text(COLLECTOR)
    out = tmp_path / "out.yaml"
    result = run_cli("import-otel", str(collector), "-o", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = COLLECTOR.splitlines()
    ottl_first = lines.index("      - name: big-prompts") + 1  # 1-based lines of the ottl_condition policy
    ottl_last = lines.index("exporters:")
    notes = [m for m in re.finditer(rf"^{re.escape(str(collector))}:(\d+):(\d+): note: (.*)$", result.stderr, re.M)
             if "ottl_condition" in m.group(3)]
    assert notes, f"no note about ottl_condition on stderr:\n{result.stderr}"
    assert any(ottl_first <= int(m.group(1)) <= ottl_last for m in notes), \
        f"ottl_condition note not at lines {ottl_first}-{ottl_last}:\n{result.stderr}"

    text = out.read_text()
    for name in ("errors", "baseline", "not-health-checks", "slow-and-large", "slow", "large"):
        assert re.search(rf"name: ['\"]?{re.escape(name)}['\"]?\s*$", text, re.M), f"{name} missing:\n{text}"
    assert not re.search(r"^\s*type: ['\"]?ottl_condition", text, re.M), text
    check = run_cli("check", str(out))
    assert check.returncode == 0, check.stdout + check.stderr + "\n" + text
