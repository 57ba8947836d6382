"""End-to-end tests of the durable trace store (`tailgate serve --data-dir DIR`).

SDK or raw OTLP -> `tailgate serve --data-dir` -> recording grpcio receiver, all on 127.0.0.1. What is checked:
restarts resume undecided traces and the forward queue (SIGTERM persist and SIGKILL with sync durability), spilling
keeps memory bounded, the forward queue overflows to disk during an outage, damaged records are skipped, the data
directory is locked, and a full disk degrades to early decisions.

Helpers: storelib.py (process with --data-dir, raw OTLP builders, segment parsing).
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import EXIT_TIMEOUT_S, tailgate_binary
from receiver import Receiver
from storelib import (ERRORS_AND_BASELINE_POLICIES, FLAG_HAS_IS_REMOTE, FORWARD_DROP_REASONS, KEEP_ALL_POLICIES,
                      Poster, SpanSpec, StoreTailgate, build_request, log_fields, read_segment, segments, wait_for)
from test_agent_timing import TimedReceiver
from test_e2e import hash_selected
from test_outage import downstream_port

MiB = 1 << 20
POLICY = "tailgate.policy"
TRIGGER = "tailgate.decision.trigger"


# --------------------------------------------------------------------------
# Fixture: tailgate instances on a shared data directory, stopped (bounded) at the end


class StoreEnv:
    def __init__(self, request, tmp_path: Path) -> None:
        self.request = request
        self.tmp = tmp_path
        self.binary = tailgate_binary()
        self.data_dir = tmp_path / "data"
        self.instances: list[StoreTailgate] = []
        self.receivers: list[Receiver] = []

    def policies(self, text: str, name: str = "policies.yaml") -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def start(self, config: str, downstream_port: int, policies: Path, *, same_ports_as=None,
              data_dir: Path | None | str = "default") -> StoreTailgate:
        workdir = self.tmp / f"tailgate{len(self.instances)}"
        tg = StoreTailgate(self.binary, workdir, downstream_port, config,
                           data_dir=self.data_dir if data_dir == "default" else data_dir,
                           policies_path=policies, same_ports_as=same_ports_as)
        self.request.node._tailgates = getattr(self.request.node, "_tailgates", []) + [tg]  # logs on failure
        self.instances.append(tg)
        tg.start()
        return tg

    def receiver(self, port: int = 0) -> Receiver:
        rx = Receiver(port=port)
        return self._started(rx, port)

    def timed_receiver(self) -> TimedReceiver:
        return self._started(TimedReceiver(), 0)

    def _started(self, rx, port: int):
        got = rx.start()
        assert port == 0 or got == port, f"receiver bound {got}, wanted {port}"
        self.receivers.append(rx)
        return rx

    def cleanup(self) -> None:
        for tg in self.instances:
            if tg.alive():
                tg.proc.send_signal(signal.SIGTERM)
                try:
                    tg.proc.wait(timeout=EXIT_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    tg.kill()
        for rx in self.receivers:
            rx.stop()


@pytest.fixture
def env(request, tmp_path):
    e = StoreEnv(request, tmp_path)
    try:
        yield e
    finally:
        e.cleanup()


def stopped_line(tg: StoreTailgate) -> dict[str, str]:
    """Metadata of the `tailgate stopped` line, which must be the last log line."""
    lines = [ln for ln in tg.log_text().splitlines() if ln.strip()]
    assert lines and "tailgate stopped" in lines[-1], \
        f"the last log line is not 'tailgate stopped':\n{tg.log_tail()}"
    return log_fields(lines[-1])


def recovered_line(tg: StoreTailgate) -> dict[str, str]:
    lines = tg.log_lines("trace store recovered")
    assert len(lines) == 1, f"expected one 'trace store recovered' line, found {len(lines)}:\n{tg.log_tail()}"
    fields = log_fields(lines[0])
    for key in ("traces", "records", "decisions", "forward_batches", "damaged_records", "seconds"):
        assert key in fields, f"'trace store recovered' lacks {key}=: {lines[0]}"
    return fields


def sid(rng: random.Random) -> str:
    return rng.randbytes(8).hex()


def span_counts(rx: Receiver) -> Counter:
    return Counter((s.trace_id, s.span_id) for s in rx.spans())


# --------------------------------------------------------------------------
# 7. A second instance on the same data directory


def test_second_instance_on_same_data_dir_exits_1(env, receiver):
    policies = env.policies(KEEP_ALL_POLICIES)
    first = env.start("forwarder:\n  batch_timeout: 100ms\n", receiver.port, policies)
    lock = env.data_dir / "LOCK"
    assert lock.read_text().strip() == str(first.pid), f"LOCK holds {lock.read_text()!r}, pid is {first.pid}"

    second = StoreTailgate(env.binary, env.tmp / "second", receiver.port, "forwarder:\n  batch_timeout: 100ms\n",
                           data_dir=env.data_dir, policies_path=policies)
    second.config_path.write_text(second.config_text)
    out = subprocess.run(second.command(), stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                         cwd=second.workdir)
    text = (out.stdout + out.stderr).decode(errors="replace")
    assert out.returncode == 1, f"second instance exited {out.returncode}, want 1:\n{text}"
    want = f"data directory {env.data_dir} is in use by another tailgate (pid {first.pid})"
    assert want in text, f"{want!r} not in the second instance's output:\n{text}"
    assert first.alive(), "the first instance died when a second one tried its data directory"
    assert first.require("tailgate_store_disk_budget_bytes") == 10 * 1024 ** 3  # still serving, default budget

    # The lock goes with the process: after a clean stop, the directory can be used again — here named by the
    # configuration file's `data_dir:` (relative to the file) instead of the flag.
    assert first.terminate() == 0, first.log_tail()
    third = env.start("data_dir: ../data\nforwarder:\n  batch_timeout: 100ms\n", receiver.port, policies,
                      data_dir=None)
    assert "--data-dir" not in third.command()
    assert third.alive() and lock.read_text().strip() == str(third.pid)
    assert Path(recovered_line(third)["data_dir"]).resolve() == env.data_dir.resolve()


# --------------------------------------------------------------------------
# 1. SIGTERM mid-run, restart on the same ports while the SDK keeps exporting


RESTART_CONFIG = """\
buffer:
  wait_after_root: 5s
  idle_timeout: 30s
  max_trace_age: 120s
store:
  spill_after: 1s
forwarder:
  batch_timeout: 100ms
"""
WAIT_AFTER_ROOT_S = 5.0


class AgentRun:
    """One agent run on its own thread: root `invoke_agent` open throughout; retrieval and a first chat end at once;
    a tool span ends when `mid` is set; the final chat and the root end when `finish` is set (or all at once for a
    run that finishes early). Records every span's (trace id, span id, name)."""

    def __init__(self, service, index: int, finish_early: bool) -> None:
        self.service = service
        self.index = index
        self.finish_early = finish_early
        self.early_done = threading.Event()
        self.mid = threading.Event()
        self.mid_done = threading.Event()
        self.finish = threading.Event()
        self.spans: list[tuple[str, str]] = []  # (span id, name)
        self.trace_id = ""
        self.root_id = ""
        self.error: BaseException | None = None

    def _end(self, span, name: str) -> None:
        from opentelemetry import trace as trace_api
        self.spans.append((trace_api.format_span_id(span.get_span_context().span_id), name))
        span.end()

    def run(self) -> None:
        from opentelemetry import context as otel_context
        from opentelemetry import trace as trace_api
        try:
            tracer = self.service.tracer
            root = tracer.start_span("invoke_agent", context=otel_context.Context(),
                                     attributes={"gen_ai.operation.name": "invoke_agent", "run": self.index})
            ctx = root.get_span_context()
            self.trace_id = trace_api.format_trace_id(ctx.trace_id)
            self.root_id = trace_api.format_span_id(ctx.span_id)
            in_root = trace_api.set_span_in_context(root)
            for name in ("retrieval", "chat"):
                self._end(tracer.start_span(name, context=in_root), name)
            if self.finish_early:
                self._end(tracer.start_span("chat final", context=in_root), "chat final")
                self._end(root, "invoke_agent")
                self.early_done.set()
                return
            tool = tracer.start_span("execute_tool", context=in_root)
            self.early_done.set()
            if not self.mid.wait(60):
                raise TimeoutError("mid not signalled")
            self._end(tool, "execute_tool")
            self.mid_done.set()
            if not self.finish.wait(60):
                raise TimeoutError("finish not signalled")
            final = tracer.start_span("chat final", context=in_root)
            final.set_attribute("gen_ai.usage.output_tokens", 42)
            self._end(final, "chat final")
            self._end(root, "invoke_agent")
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error
            self.early_done.set()
            self.mid_done.set()


def test_sigterm_mid_run_then_restart_on_same_ports(env):
    from storelib import SdkService

    receiver = env.timed_receiver()
    policies = env.policies(KEEP_ALL_POLICIES)
    t1 = env.start(RESTART_CONFIG, receiver.port, policies)
    service = SdkService("agent", t1.grpc_endpoint)
    open_runs = [AgentRun(service, i, finish_early=False) for i in range(10)]
    done_runs = [AgentRun(service, 100 + i, finish_early=True) for i in range(3)]
    runs = open_runs + done_runs
    threads = [threading.Thread(target=r.run, name=f"run-{r.index}", daemon=True) for r in runs]
    try:
        for t in threads:
            t.start()
        assert all(r.early_done.wait(20) for r in runs), "runs did not start"
        assert not [r.error for r in runs if r.error], [r.error for r in runs if r.error]
        service.flush()  # early spans (and the finished runs) are in t1 now
        root_acked = {r.trace_id: service.exporter.ack_time(r.trace_id, r.root_id) for r in done_runs}
        assert all(root_acked.values()), root_acked
        assert wait_for(lambda: t1.sample("tailgate_traces_buffered") == len(runs), 5), \
            f"tailgate_traces_buffered = {t1.sample('tailgate_traces_buffered')}, want {len(runs)}"

        # spill_after 1s: quiet runs move to disk before the stop (the stop then adds records for newer spans).
        assert wait_for(lambda: t1.sample("tailgate_store_traces") == len(runs), 10), \
            f"tailgate_store_traces = {t1.sample('tailgate_store_traces')}, want {len(runs)}"
        # Half of the open runs end their tool span right before the SIGTERM, half while tailgate is down:
        # the SDK exports them to a closing or closed port and retries.
        for r in open_runs[:5]:
            r.mid.set()
        # The finished runs' roots must be old enough that a restarted (rather than continued) wait_after_root
        # would be told apart: wait (bounded) until 2 s have passed since their roots were acknowledged.
        assert wait_for(lambda: time.monotonic() - max(root_acked.values()) >= 2.0, 5)
        code = t1.terminate()
        for r in open_runs[5:]:
            r.mid.set()
        assert code == 0, f"t1 exited {code} after SIGTERM\n{t1.log_tail()}"
        assert receiver.span_count() == 0, \
            f"t1 forwarded {receiver.span_count()} spans at SIGTERM: undecided traces were decided, not persisted"
        stop = stopped_line(t1)
        assert stop.get("spans_lost") == "0" and int(stop.get("persisted_traces", "-1")) >= len(runs), stop
        assert list(env.data_dir.glob("traces-*.tgs")), "no traces segment in the data directory"
        # The SDK tries the closed port (and will retry) before the new process listens.
        assert wait_for(lambda: service.retried_exports > 0, 10), \
            "the SDK did not try to export while tailgate was down"

        t2 = env.start(RESTART_CONFIG, receiver.port, policies, same_ports_as=t1)
        t2_ready = time.monotonic()
        recovered = recovered_line(t2)
        assert int(recovered["traces"]) == len(runs), f"recovered {recovered}, want traces={len(runs)}"
        assert int(recovered["damaged_records"]) == 0, recovered
        assert t2.require("tailgate_store_recovered_traces") == len(runs)

        assert all(r.mid_done.wait(20) for r in open_runs)
        service.flush()  # the tool spans, retried by the SDK across the restart, reach t2
        for r in open_runs:
            r.finish.set()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads), "agent runs did not finish"
        assert not [r.error for r in runs if r.error], [r.error for r in runs if r.error]
        service.flush()
        last_root_acked = max(service.exporter.ack_time(r.trace_id, r.root_id) for r in open_runs)

        expected = {r.trace_id: {sid for sid, _ in r.spans} for r in runs}
        assert all(len(expected[r.trace_id]) == (4 if r.finish_early else 5) for r in runs), expected
        arrived = receiver.wait_until(
            lambda rx: all(rx.span_ids_of(tid) == ids for tid, ids in expected.items()),
            timeout=WAIT_AFTER_ROOT_S + 15)
        time.sleep(0.5)  # batch_timeout 100ms: a duplicate sent along would be here by now
        counts = span_counts(receiver)
        missing = {tid: sorted(ids - receiver.span_ids_of(tid)) for tid, ids in expected.items()
                   if ids - receiver.span_ids_of(tid)}
        dupes = {k: n for k, n in counts.items() if n > 1}
        unknown = {tid for tid, _ in counts} - set(expected)
        assert arrived and not missing and not dupes and not unknown, (
            f"missing spans per trace: {missing}\nduplicated spans: {dupes}\nunknown traces: {unknown}\n"
            f"SDK export failures: {service.exporter.failures}")

        for r in runs:
            spans = receiver.trace(r.trace_id)
            marks = {(s.attributes.get(POLICY), s.attributes.get(TRIGGER)) for s in spans}
            assert marks == {("everything", "root")}, \
                f"run {r.index} ({r.trace_id}): (policy, trigger) of its spans: {marks} — the trace was split"

        # Timers continue across the restart (wall-clock times in the records): the finished runs are decided
        # wait_after_root after their root arrived at t1, not wait_after_root after t2 started.
        for r in done_runs:
            waited = receiver.arrival(r.trace_id) - root_acked[r.trace_id]
            assert WAIT_AFTER_ROOT_S - 0.5 <= waited, \
                f"run {r.index} arrived {waited:.2f}s after its root was acknowledged (wait_after_root 5s)"
        first_done = min(receiver.arrival(r.trace_id) for r in done_runs)
        assert first_done < t2_ready + WAIT_AFTER_ROOT_S - 0.5, \
            (f"finished runs arrived {first_done - t2_ready:.2f}s after t2 was ready: their wait_after_root "
             f"started over at the restart")
        assert t2.alive()
        print(f"restart: {len(runs)} runs recovered ({recovered}); {service.retried_exports} SDK exports retried; "
              f"last root acked {last_root_acked - t2_ready:.1f}s after t2 was ready")
    finally:
        for r in open_runs:
            r.mid.set()
            r.finish.set()
        service.close()

    assert t2.terminate() == 0, t2.log_tail()
    stop2 = stopped_line(t2)
    assert stop2.get("persisted_traces") == "0" and stop2.get("spans_lost") == "0", stop2


# --------------------------------------------------------------------------
# 2. durability: sync — SIGKILL mid-load loses nothing acknowledged


SYNC_CONFIG = """\
buffer:
  wait_after_root: 300ms
  idle_timeout: 5s
  max_trace_age: 6s
store:
  durability: sync
forwarder:
  batch_timeout: 100ms
"""


class AckedLoad:
    """Threads posting raw OTLP/HTTP requests until told to stop or the server goes away. Each request opens 2 new
    traces (3 children whose parent, the root, is local and not sent yet) and closes 2 opened 2 requests earlier
    (their root), so at any moment some traces are complete and decided, some wait for their root. Records the
    spans of every acknowledged (HTTP 200) request."""

    def __init__(self, url: str, seed: int, threads: int = 4) -> None:
        self.poster = Poster(url, timeout=10)
        self.seed = seed
        self.n_threads = threads
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked: set[tuple[str, str]] = set()  # (trace id, span id)
        self.sent_unacked: set[tuple[str, str]] = set()
        self.statuses: Counter = Counter()
        self.requests_acked = 0
        self._threads: list[threading.Thread] = []

    def _worker(self, k: int) -> None:
        rng = random.Random(self.seed * 100 + k)
        pending: list[tuple[str, str]] = []  # (trace id, root id) opened, root not sent
        for _ in range(100_000):
            if self.stop.is_set():
                return
            specs = []
            for _ in range(2):
                tid, root = rng.randbytes(16).hex(), sid(rng)
                pending.append((tid, root))
                specs += [SpanSpec(tid, sid(rng), root, f"child{i}", error=(i == 2 and rng.random() < 0.2),
                                   payload_bytes=300, flags=FLAG_HAS_IS_REMOTE) for i in range(3)]
            if len(pending) > 4:
                for tid, root in pending[:2]:
                    specs.append(SpanSpec(tid, root, "", "root", payload_bytes=300))
                del pending[:2]
            status = self.poster.post(build_request(specs))
            keys = {(s.trace_id, s.span_id) for s in specs}
            with self.lock:
                self.statuses[status] += 1
                if status == 200:
                    self.acked |= keys
                    self.requests_acked += 1
                else:
                    self.sent_unacked |= keys
            if status is None:
                return  # the server is gone

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._worker, args=(k,), name=f"load-{k}", daemon=True)
                         for k in range(self.n_threads)]
        for t in self._threads:
            t.start()

    def join(self, timeout: float) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "load threads did not stop"


def test_sync_durability_sigkill_loses_nothing_acknowledged(env, receiver):
    policies = env.policies(KEEP_ALL_POLICIES)
    t1 = env.start(SYNC_CONFIG, receiver.port, policies)
    load = AckedLoad(t1.traces_url, seed=2024)
    load.start()
    try:
        # Mid-load: enough acknowledged requests, some kept traces already forwarded, others still waiting.
        started = time.monotonic()
        assert wait_for(lambda: load.requests_acked >= 300 and receiver.span_count() > 0
                        and time.monotonic() - started >= 2.0, 30), \
            f"load too slow: {load.requests_acked} requests acknowledged, {receiver.span_count()} spans forwarded"
        assert t1.sample("tailgate_store_unsynced_requests_total") == 0, "acknowledged requests were not synced"
        assert t1.sample("tailgate_store_written_bytes_total") > 0
        t1.proc.send_signal(signal.SIGKILL)
        t1.proc.wait(timeout=10)
    finally:
        load.join(timeout=20)
    acked = set(load.acked)
    forwarded_before = receiver.span_count()
    assert load.statuses[200] == load.requests_acked and set(load.statuses) <= {200, None}, load.statuses

    t2 = env.start(SYNC_CONFIG, receiver.port, policies)
    recovered = recovered_line(t2)
    assert int(recovered["records"]) > 0 and int(recovered["traces"]) > 0, \
        f"nothing undecided was recovered from the write-ahead records: {recovered}"

    def missing() -> set[tuple[str, str]]:
        got = {(s.trace_id, s.span_id) for s in receiver.spans()}
        return acked - got

    arrived = wait_for(lambda: not missing(), timeout=6 + 20, poll=0.25)
    counts = span_counts(receiver)
    dupes = sum(n - 1 for n in counts.values() if n > 1)
    lost = missing()
    lost_traces = Counter(tid for tid, _ in lost)
    assert arrived and not lost, (
        f"{len(lost)} of {len(acked)} acknowledged spans never reached the receiver "
        f"({len(lost_traces)} traces, e.g. {list(lost_traces.items())[:5]}); "
        f"{forwarded_before} spans had been forwarded before the SIGKILL; duplicates received: {dupes}; "
        f"recovery: {recovered}")
    unknown = {k for k in counts if k not in acked and k not in load.sent_unacked}
    assert not unknown, f"spans arrived that were never sent: {sorted(unknown)[:5]}"
    print(f"sync: {len(acked)} acknowledged spans all delivered; {dupes} duplicates; recovery {recovered}")
    assert t2.terminate() == 0, t2.log_tail()


# --------------------------------------------------------------------------
# 3. Memory budget: idle traces spill to disk instead of being decided early


BUDGET = 4 * MiB
BUDGET_CONFIG = """\
buffer:
  max_buffered_bytes: 4MiB
  wait_after_root: 1s
  idle_timeout: 120s
  remote_parent_timeout: 120s
  max_trace_age: 300s
store:
  spill_after: 200ms
  on_shutdown: decide
limits:
  max_request_bytes: 8MiB
forwarder:
  batch_timeout: 100ms
"""
# Allowed above the budget in tailgate_buffered_bytes: one request's spans (~1.6 MiB) inserted before the buffer
# relieves itself, plus rounding.
BUFFER_SLACK = 2 * MiB
# RSS bound: the memory budget + 150 MiB for the runtime, a debug build's code, NIO buffers, requests in flight
# (up to 8 MiB each, parsed) and malloc's retention.
RSS_BOUND_KIB = (BUDGET + 150 * MiB) // 1024


class MetricSampler:
    """Polls tailgate's /metrics and /proc every 100 ms on a thread; keeps the maxima."""

    def __init__(self, tg: StoreTailgate) -> None:
        self.tg = tg
        self.stop = threading.Event()
        self.max_buffered = 0.0
        self.max_stored_traces = 0.0
        self.max_rss_kib = 0
        self.samples = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _run(self) -> None:
        for _ in range(10_000):
            if self.stop.wait(0.1):
                return
            try:
                self.max_buffered = max(self.max_buffered, self.tg.sample("tailgate_buffered_bytes"))
                self.max_stored_traces = max(self.max_stored_traces, self.tg.sample("tailgate_store_traces"))
                self.max_rss_kib = max(self.max_rss_kib, self.tg.memory()["VmRSS"])
                self.samples += 1
            except Exception as error:  # noqa: BLE001 - reported by the test
                self.errors.append(repr(error))

    def __enter__(self) -> "MetricSampler":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def idle_traces(rng: random.Random, n: int, spans_per_trace: int, payload: int) -> dict[str, tuple[list[SpanSpec], bool]]:
    """n traces of children of an unsent, local root (so they wait for max_trace_age); ~8 % have one ERROR span.
    trace id -> (spans, has_error)."""
    out = {}
    for i in range(n):
        tid, root = rng.randbytes(16).hex(), sid(rng)
        error_at = rng.randrange(spans_per_trace) if rng.random() < 0.08 or i == 0 else -1
        specs = [SpanSpec(tid, sid(rng), root, f"step{k}", error=(k == error_at), payload_bytes=payload,
                          flags=FLAG_HAS_IS_REMOTE) for k in range(spans_per_trace)]
        out[tid] = (specs, error_at >= 0)
    return out


def assert_decided_whole(receiver, traces: dict[str, tuple[list[SpanSpec], bool]], keep: set[str]) -> None:
    """Every trace in `keep` arrived whole, once, with the policy that should keep it (errors, else the baseline
    sample); no span of any other trace arrived."""
    received = receiver.traces()
    wrong = []
    for tid, (specs, err) in traces.items():
        got = Counter(s.span_id for s in received.get(tid, []))
        want = {s.span_id for s in specs} if tid in keep else set()
        if set(got) != want or any(n > 1 for n in got.values()):
            wrong.append(f"{tid} error={err} hash_selected={hash_selected(tid)}: {len(got)} distinct spans "
                         f"({sum(got.values())} received), want {len(want)}")
        policy = {s.attributes.get(POLICY) for s in received.get(tid, [])}
        if tid in keep and policy != {"errors" if err else "baseline"}:
            wrong.append(f"{tid}: tailgate.policy {policy}")
    assert not wrong, f"{len(wrong)} traces decided or delivered wrongly:\n  " + "\n  ".join(wrong[:15])


def test_memory_budget_spills_idle_traces_to_disk(env, receiver):
    policies = env.policies(ERRORS_AND_BASELINE_POLICIES)
    tg = env.start(BUDGET_CONFIG, receiver.port, policies)
    rng = random.Random(3303)
    traces = idle_traces(rng, n=400, spans_per_trace=50, payload=4400)
    ids = list(traces)
    poster = Poster(tg.traces_url)
    sent_bytes = 0
    statuses: Counter = Counter()
    started = time.monotonic()
    with MetricSampler(tg) as sampler:
        # 10 groups of 40 traces; each group in 5 rounds of 10 spans per trace (one ~1.7 MiB request per round),
        # so every trace gets spans after others were spilled.
        for g in range(0, len(ids), 40):
            group = ids[g:g + 40]
            for r in range(5):
                body = build_request([s for tid in group for s in traces[tid][0][r * 10:(r + 1) * 10]])
                sent_bytes += len(body)
                statuses[poster.post(body)] += 1
        sent_s = time.monotonic() - started
        # Everything is quiet now: after spill_after every trace's spans are on disk.
        assert wait_for(lambda: tg.sample("tailgate_store_traces") == len(ids), 10), \
            f"tailgate_store_traces = {tg.sample('tailgate_store_traces')}, want {len(ids)}"
    memory = tg.memory()
    assert statuses == Counter({200: 50}), f"ingest answered {dict(statuses)}"
    assert sent_bytes >= 20 * BUDGET, f"sent only {sent_bytes / MiB:.1f} MiB"
    assert not sampler.errors and sampler.samples >= 5, (sampler.samples, sampler.errors[:3])
    assert sampler.max_buffered <= BUDGET + BUFFER_SLACK, \
        f"tailgate_buffered_bytes reached {sampler.max_buffered / MiB:.2f} MiB (budget 4 MiB + 2 MiB slack)"
    assert sampler.max_stored_traces > 0
    peak_kib = max(sampler.max_rss_kib, memory["VmHWM"])
    assert peak_kib <= RSS_BOUND_KIB, \
        (f"peak RSS {peak_kib / 1024:.0f} MiB (VmHWM {memory['VmHWM'] / 1024:.0f} MiB, sampled max "
         f"{sampler.max_rss_kib / 1024:.0f} MiB) > bound {RSS_BOUND_KIB / 1024:.0f} MiB after {sent_bytes / MiB:.0f} MiB")
    assert tg.sample("tailgate_traces_decided_total") == 0, "traces were decided before their time"
    assert tg.sample("tailgate_traces_decided_by_trigger_total", trigger="memory_pressure") == 0
    assert tg.sample("tailgate_traces_buffered") == len(ids)
    assert tg.sample("tailgate_store_trace_bytes") >= sent_bytes * 0.9, \
        f"tailgate_store_trace_bytes {tg.sample('tailgate_store_trace_bytes') / MiB:.1f} MiB for {sent_bytes / MiB:.1f} MiB sent"
    assert tg.sample("tailgate_store_written_bytes_total") >= sent_bytes * 0.9
    print(f"memory budget: {sent_bytes / MiB:.0f} MiB sent in {sent_s:.1f}s; max tailgate_buffered_bytes "
          f"{sampler.max_buffered / MiB:.2f} MiB; peak RSS {peak_kib / 1024:.0f} MiB (bound {RSS_BOUND_KIB / 1024:.0f}); "
          f"RSS now {memory['VmRSS'] / 1024:.0f} MiB")

    # on_shutdown: decide — every trace decided by policy now, spans read back from disk.
    code = tg.terminate(timeout=60)
    assert code == 0, f"exit code {code}\n{tg.log_tail()}"
    stop = stopped_line(tg)
    assert stop.get("spans_lost") == "0" and stop.get("persisted_traces") == "0", stop
    keep = {tid for tid, (_, err) in traces.items() if err or hash_selected(tid)}
    assert any(traces[t][1] for t in keep) and any(not traces[t][1] for t in keep), "seed covers too little"
    assert_decided_whole(receiver, traces, keep)


COLD_CONFIG = BUDGET_CONFIG.replace("max_buffered_bytes: 4MiB", "max_buffered_bytes: 1MiB")


def test_runs_beyond_the_memory_budget_go_cold_and_decide_as_before(env, receiver):
    """2,000 waiting runs whose spilled summaries alone (~1.4 KiB each) are ~3x a 1 MiB budget: the longest-spilled
    go cold (only their records' places and timers stay in memory) instead of being decided early. A root reaching a
    cold run brings it back and the run is decided wait_after_root later, whole; the rest are decided at shutdown,
    each rebuilt from disk, exactly as the policies would have decided them in memory."""
    policies = env.policies(ERRORS_AND_BASELINE_POLICIES)
    tg = env.start(COLD_CONFIG, receiver.port, policies)
    rng = random.Random(4404)
    traces = idle_traces(rng, n=2000, spans_per_trace=4, payload=200)
    ids = list(traces)
    poster = Poster(tg.traces_url)
    statuses: Counter = Counter()
    for g in range(0, len(ids), 200):
        for r in range(2):  # each run's spans in two requests, the second after the first was spilled
            statuses[poster.post(build_request([s for tid in ids[g:g + 200] for s in traces[tid][0][r * 2:(r + 1) * 2]]))] += 1
            time.sleep(0.3)
    assert statuses == Counter({200: 20}), f"ingest answered {dict(statuses)}"
    assert wait_for(lambda: tg.sample("tailgate_store_traces") == len(ids), 10), \
        f"tailgate_store_traces = {tg.sample('tailgate_store_traces')}, want {len(ids)}"
    cold = tg.sample("tailgate_store_cold_traces")
    assert cold >= 1000, f"only {cold} of {len(ids)} runs went cold"
    assert tg.sample("tailgate_traces_decided_total") == 0, "traces were decided before their time"
    assert tg.sample("tailgate_traces_buffered") == len(ids)
    assert tg.sample("tailgate_buffered_bytes") <= 1 * MiB + BUFFER_SLACK

    # Roots arrive for the first 60 runs (10 of them with an error): decided wait_after_root later, whole.
    roots = {}
    for i, tid in enumerate(ids[:60]):
        specs, err = traces[tid]
        roots[tid] = SpanSpec(tid, specs[0].parent_span_id, "", "root", error=(i < 10), flags=FLAG_HAS_IS_REMOTE)
        traces[tid] = (specs + [roots[tid]], err or i < 10)
    assert poster.post(build_request(list(roots.values()))) == 200
    assert wait_for(lambda: tg.sample("tailgate_traces_decided_total") == 60, 15), \
        f"decided {tg.sample('tailgate_traces_decided_total')} of the 60 runs whose root arrived"
    assert tg.sample("tailgate_traces_decided_by_trigger_total", trigger="root") == 60
    assert tg.sample("tailgate_traces_decided_by_trigger_total", trigger="memory_pressure") == 0

    code = tg.terminate(timeout=120)
    assert code == 0, f"exit code {code}\n{tg.log_tail()}"
    stop = stopped_line(tg)
    assert stop.get("spans_lost") == "0", stop
    keep = {tid for tid, (_, err) in traces.items() if err or hash_selected(tid)}
    assert any(not traces[t][1] for t in keep) and len(keep) < len(ids), "seed covers too little"
    assert_decided_whole(receiver, traces, keep)
    print(f"cold runs: {cold:.0f} of {len(ids)} cold; {len(keep)} kept, all whole")


# --------------------------------------------------------------------------
# 4 and 5. Downstream outages: the forward queue overflows to disk; it survives a restart


OUTAGE_CONFIG = """\
buffer:
  wait_after_root: 200ms
  idle_timeout: 2s
forwarder:
  batch_timeout: 100ms
  queue_bytes: 1MiB
  max_backoff: 500ms
"""
QUEUE_BYTES = 1 * MiB


def complete_traces(rng: random.Random, n: int, spans_per_trace: int = 5, payload: int = 1000) -> list[list[SpanSpec]]:
    """n complete traces (root + children), decided wait_after_root after they arrive."""
    out = []
    for _ in range(n):
        tid, root = rng.randbytes(16).hex(), sid(rng)
        out.append([SpanSpec(tid, root, "", "root", payload_bytes=payload)]
                   + [SpanSpec(tid, sid(rng), root, f"child{k}", payload_bytes=payload)
                      for k in range(spans_per_trace - 1)])
    return out


def send_traces(tg: StoreTailgate, traces: list[list[SpanSpec]], per_request: int, workers: int = 4) -> Counter:
    """Posts the traces (per_request traces per request) from `workers` threads; returns the HTTP statuses."""
    poster = Poster(tg.traces_url)
    bodies = [build_request([s for t in traces[i:i + per_request] for s in t])
              for i in range(0, len(traces), per_request)]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="send") as pool:
        return Counter(pool.map(poster.post, bodies, timeout=120))


def delivery_report(rx: Receiver, traces: list[list[SpanSpec]]) -> tuple[list[str], int]:
    """(problems, duplicates): traces missing spans, unknown spans; duplicates counted separately."""
    want = {(s.trace_id, s.span_id) for t in traces for s in t}
    counts = span_counts(rx)
    missing = want - set(counts)
    unknown = set(counts) - want
    problems = []
    if missing:
        problems.append(f"{len(missing)} of {len(want)} kept spans never arrived "
                        f"({len({t for t, _ in missing})} traces)")
    if unknown:
        problems.append(f"{len(unknown)} unknown spans arrived")
    return problems, sum(n - 1 for n in counts.values() if n > 1)


def test_outage_longer_than_memory_queue_spools_to_disk(env):
    port = downstream_port()
    policies = env.policies(KEEP_ALL_POLICIES)
    tg = env.start(OUTAGE_CONFIG, port, policies)
    rng = random.Random(4404)
    traces = complete_traces(rng, n=1200)  # ~6.6 MiB of spans: several times queue_bytes
    spans = sum(len(t) for t in traces)

    statuses = send_traces(tg, traces, per_request=10)
    assert statuses == Counter({200: 120}), \
        f"ingest pushed back (or failed) while the disk had room: {dict(statuses)}"
    assert wait_for(lambda: tg.decided_total() >= len(traces), 15), \
        f"{tg.decided_total()} of {len(traces)} traces decided"
    assert wait_for(lambda: tg.sample("tailgate_forward_failures_total", retried="true") > 0, 10), \
        "the forwarder never tried the (closed) downstream"
    spooled = tg.sample("tailgate_store_written_bytes_total")
    assert spooled >= 3 * QUEUE_BYTES, \
        f"only {spooled / MiB:.2f} MiB written to the store: the forward queue did not overflow to disk"
    queue_records = [r for seg in segments(env.data_dir, "queue") for r in read_segment(seg, live=True)]
    # Records still in the store's write buffer are not in the file yet; the store flushes about every second.
    assert wait_for(lambda: sum(r.kind == 6 for seg in segments(env.data_dir, "queue") for r in read_segment(seg, live=True)) > 0,
                    5), f"no forward-batch record (kind 6) in the queue segments: {len(queue_records)} records"
    assert tg.forward_drops() == {r: 0 for r in FORWARD_DROP_REASONS}, tg.forward_drops()
    assert tg.sample("tailgate_spans_forwarded_total") == 0
    # More traffic is still accepted during the outage.
    late = complete_traces(rng, n=100)
    assert send_traces(tg, late, per_request=10) == Counter({200: 10})
    traces += late
    spans += sum(len(t) for t in late)
    assert tg.alive()

    rx = env.receiver(port)
    came_up = time.monotonic()
    want = {(s.trace_id, s.span_id) for t in traces for s in t}
    arrived = wait_for(lambda: want <= set(span_counts(rx)), 40, poll=0.25)
    took = time.monotonic() - came_up
    time.sleep(0.5)  # anything sent twice would be here by now
    problems, dupes = delivery_report(rx, traces)
    assert arrived and not problems and not dupes, \
        f"after the downstream came up ({took:.1f}s): {problems}; {dupes} duplicate spans; drops {tg.forward_drops()}"
    assert tg.forward_drops() == {r: 0 for r in FORWARD_DROP_REASONS}, tg.forward_drops()
    assert wait_for(lambda: tg.sample("tailgate_spans_forwarded_total") >= spans, 5)
    assert tg.sample("tailgate_store_read_bytes_total") > 0, "no batch was read back from the store"
    print(f"outage: {spans} spans, {spooled / MiB:.1f} MiB spooled; all delivered {took:.1f}s after the downstream "
          f"came up")
    assert tg.terminate() == 0, tg.log_tail()
    stop = stopped_line(tg)
    assert stop.get("spans_lost") == "0" and stop.get("persisted_forward_spans") == "0", stop


def test_outage_then_restart_delivers_queue_once(env):
    port = downstream_port()
    policies = env.policies(KEEP_ALL_POLICIES)
    t1 = env.start(OUTAGE_CONFIG, port, policies)
    rng = random.Random(5505)
    traces = complete_traces(rng, n=500)  # ~2.7 MiB: part in the memory queue, part spooled
    spans = sum(len(t) for t in traces)
    assert send_traces(t1, traces, per_request=10) == Counter({200: 50})
    assert wait_for(lambda: t1.decided_total() >= len(traces), 15), \
        f"{t1.decided_total()} of {len(traces)} traces decided"
    assert t1.require("tailgate_spans_kept_total") == spans
    assert wait_for(lambda: t1.sample("tailgate_forward_failures_total", retried="true") > 0, 10)

    code = t1.terminate()
    assert code == 0, f"t1 exited {code}\n{t1.log_tail()}"
    stop = stopped_line(t1)
    assert stop.get("spans_lost") == "0", stop
    assert int(stop.get("persisted_forward_spans", "-1")) == spans, \
        f"persisted_forward_spans={stop.get('persisted_forward_spans')}, want {spans} (every kept span): {stop}"

    rx = env.receiver(port)
    t2 = env.start(OUTAGE_CONFIG, port, policies)
    recovered = recovered_line(t2)
    assert int(recovered["forward_batches"]) > 0 and int(recovered["damaged_records"]) == 0, recovered
    want = {(s.trace_id, s.span_id) for t in traces for s in t}
    arrived = wait_for(lambda: want <= set(span_counts(rx)), 30, poll=0.25)
    time.sleep(0.5)
    problems, dupes = delivery_report(rx, traces)
    assert arrived and not problems and not dupes, f"after the restart: {problems}; {dupes} duplicate spans; {recovered}"
    for t in traces:
        got = {s.attributes.get(POLICY) for s in rx.trace(t[0].trace_id)}
        assert got == {"everything"}, f"{t[0].trace_id}: tailgate.policy {got}"
    assert t2.forward_drops() == {r: 0 for r in FORWARD_DROP_REASONS}, t2.forward_drops()

    # Delivered batches are done: another restart sends nothing again.
    assert t2.terminate() == 0, t2.log_tail()
    assert stopped_line(t2).get("persisted_forward_spans") == "0"
    before = rx.span_count()
    t3 = env.start(OUTAGE_CONFIG, port, policies)
    recovered3 = recovered_line(t3)
    assert recovered3["forward_batches"] == "0", f"delivered batches came back after a restart: {recovered3}"
    time.sleep(1.0)  # batch_timeout 100ms, retry backoff <= 500ms: a resend would show by now
    assert rx.span_count() == before, f"{rx.span_count() - before} spans sent again after the second restart"


# --------------------------------------------------------------------------
# 6. A damaged record is skipped, the rest recovered


def waiting_config(parent_timeout: str) -> str:
    """Traces without a root whose parent's locality is unknown wait remote_parent_timeout after their last span."""
    return f"""\
buffer:
  idle_timeout: {parent_timeout}
  remote_parent_timeout: {parent_timeout}
  max_trace_age: 300s
store:
  spill_after: 200ms
forwarder:
  batch_timeout: 100ms
"""


def test_corrupted_record_is_skipped_and_the_rest_recovered(env, receiver):
    policies = env.policies(KEEP_ALL_POLICIES)
    t1 = env.start(waiting_config("60s"), receiver.port, policies)
    rng = random.Random(6606)

    def trace(n_spans: int, payload: int) -> list[SpanSpec]:
        tid, parent = rng.randbytes(16).hex(), sid(rng)  # the parent is never sent
        return [SpanSpec(tid, sid(rng), parent, f"op{k}", payload_bytes=payload) for k in range(n_spans)]

    small = [trace(4, 500) for _ in range(30)]
    big = trace(40, 2000)
    poster = Poster(t1.traces_url)
    for t in small[:15] + [big] + small[15:]:  # one request (so one record) per trace
        assert poster.post(build_request(t)) == 200
    assert wait_for(lambda: t1.sample("tailgate_store_traces") == 31, 10), \
        f"tailgate_store_traces = {t1.sample('tailgate_store_traces')}, want 31"
    assert t1.terminate() == 0, t1.log_tail()
    assert receiver.span_count() == 0

    # The largest spans record must be the big trace's; flip bytes in the middle of its payload.
    records = [(seg, r) for seg in segments(env.data_dir, "traces") for r in read_segment(seg) if r.kind in (1, 2)]
    assert records and all(r.crc_ok for _, r in records), "a record's CRC-32C does not match as written"
    by_trace = Counter(r.trace_id for _, r in records)
    assert set(by_trace) == {t[0].trace_id for t in small + [big]} and set(by_trace.values()) == {1}, by_trace
    seg, victim = max(records, key=lambda x: x[1].length)
    assert victim.trace_id == big[0].trace_id, "the largest record is not the big trace's"
    data = bytearray(seg.read_bytes())
    middle = victim.offset + 8 + victim.length // 2
    for i in range(middle, middle + 4):
        data[i] ^= 0xFF
    seg.write_bytes(bytes(data))

    t2 = env.start(waiting_config("1s"), receiver.port, policies)
    damaged = t2.log_lines("trace store: damaged records skipped")
    assert len(damaged) == 1, f"want one 'damaged records skipped' line, got {len(damaged)}:\n{t2.log_tail()}"
    fields = log_fields(damaged[0])
    assert fields.get("file") == str(seg) and fields.get("offset") == str(victim.offset), damaged[0]
    assert " error " in damaged[0] and "what=" in damaged[0], damaged[0]
    recovered = recovered_line(t2)
    assert recovered["damaged_records"] == "1" and recovered["traces"] == "30", recovered
    assert t2.require("tailgate_store_damaged_records_total") >= 1

    want = {t[0].trace_id: {s.span_id for s in t} for t in small}
    arrived = receiver.wait_until(lambda rx: all(rx.span_ids_of(tid) == ids for tid, ids in want.items()), 15)
    time.sleep(0.5)
    missing = {tid: len(ids - receiver.span_ids_of(tid)) for tid, ids in want.items() if ids - receiver.span_ids_of(tid)}
    assert arrived and not missing, f"recovered traces missing spans: {missing}"
    assert receiver.trace(big[0].trace_id) == [], "spans of the damaged record were forwarded"
    assert receiver.span_count() == sum(len(t) for t in small), "duplicate spans"
    assert t2.alive() and t2.sample("tailgate_traces_decided_total") == 30
    assert t2.terminate() == 0, t2.log_tail()


# --------------------------------------------------------------------------
# 8. Disk budget used up too: traces beyond both budgets are decided early, nothing crashes


FULL_DISK_CONFIG = """\
buffer:
  max_buffered_bytes: 2MiB
  idle_timeout: 120s
  remote_parent_timeout: 120s
  max_trace_age: 300s
store:
  max_disk_bytes: 2MiB
  spill_after: 200ms
limits:
  max_request_bytes: 8MiB
forwarder:
  batch_timeout: 100ms
"""


def test_disk_budget_exhausted_decides_early(env, receiver):
    policies = env.policies(ERRORS_AND_BASELINE_POLICIES)
    tg = env.start(FULL_DISK_CONFIG, receiver.port, policies)
    rng = random.Random(8808)
    traces = idle_traces(rng, n=200, spans_per_trace=20, payload=3000)  # ~12 MiB: 6x both budgets together
    ids = list(traces)
    poster = Poster(tg.traces_url)
    statuses: Counter = Counter()
    with MetricSampler(tg) as sampler:
        for i in range(0, len(ids), 10):
            statuses[poster.post(build_request([s for tid in ids[i:i + 10] for s in traces[tid][0]]))] += 1
        assert wait_for(lambda: tg.sample("tailgate_traces_decided_by_trigger_total", trigger="memory_pressure") > 0,
                        10), "no trace was decided early although memory and disk budgets are both used up"
    assert statuses == Counter({200: 20}), f"ingest answered {dict(statuses)}"
    assert tg.alive(), f"tailgate died (exit code {tg.proc.poll()})"
    early = tg.sample("tailgate_traces_decided_by_trigger_total", trigger="memory_pressure")
    refusals = tg.require("tailgate_store_write_refusals_total")
    assert refusals > 0, "the store never refused a write"
    assert tg.sample("tailgate_store_trace_bytes") <= 2 * MiB, tg.sample("tailgate_store_trace_bytes")
    assert tg.require("tailgate_store_disk_budget_bytes") == 2 * MiB
    assert sampler.max_buffered <= 2 * MiB + BUFFER_SLACK, \
        f"tailgate_buffered_bytes reached {sampler.max_buffered / MiB:.2f} MiB (budget 2 MiB)"
    assert tg.sample("tailgate_traces_decided_total") == early, "decided by something else than memory pressure"
    warned = tg.log_lines("trace store refused a write")
    assert len(warned) == 1 and "max_disk_bytes" in warned[0], \
        f"want one (rate-limited) warning naming max_disk_bytes, got {warned}"
    # Still answering: one more trace is accepted, and the metrics page works.
    extra = idle_traces(rng, n=1, spans_per_trace=5, payload=3000)
    assert poster.post(build_request(next(iter(extra.values()))[0])) == 200
    traces.update(extra)

    # Stop (persist what fits; the rest is decided at the stop), then a restart with room decides the rest.
    assert tg.terminate() == 0, tg.log_tail()
    stop = stopped_line(tg)
    assert stop.get("spans_lost") == "0", stop
    roomy = FULL_DISK_CONFIG.replace("max_disk_bytes: 2MiB", "max_disk_bytes: 1GiB").replace(
        "max_buffered_bytes: 2MiB", "max_buffered_bytes: 64MiB").replace(
        "max_trace_age: 300s", "max_trace_age: 2s")  # their local parent never comes: decided by age
    t2 = env.start(roomy, receiver.port, policies)
    recovered = recovered_line(t2)
    assert int(recovered["traces"]) > 0 and recovered["damaged_records"] == "0", recovered
    keep = {tid for tid, (_, err) in traces.items() if err or hash_selected(tid)}
    want = {tid: {s.span_id for s in traces[tid][0]} for tid in keep}
    arrived = receiver.wait_until(lambda rx: all(rx.span_ids_of(t) == ids for t, ids in want.items()), 20)
    assert wait_for(lambda: t2.sample("tailgate_traces_buffered") == 0, 10)
    time.sleep(0.5)
    received = receiver.traces()
    wrong = [f"{tid}: {len(received.get(tid, []))} spans received, want {len(want.get(tid, ()))}"
             for tid in traces if {s.span_id for s in received.get(tid, [])} != want.get(tid, set())]
    dupes = sum(n - 1 for n in span_counts(receiver).values() if n > 1)
    assert arrived and not wrong and not dupes, \
        f"{len(wrong)} traces delivered wrongly, {dupes} duplicate spans:\n  " + "\n  ".join(wrong[:15])
    print(f"full disk: {early:.0f} traces decided early, {refusals:.0f} refusals; {recovered['traces']} traces "
          f"persisted and decided after the restart")


# --------------------------------------------------------------------------
# 9. Late errors revise drops: within revise_window the whole dropped trace is forwarded, after it nothing


REVISE_WINDOW_S = 3.0
REVISE_CONFIG = f"""\
buffer:
  wait_after_root: 300ms
  idle_timeout: 1s
  max_trace_age: 30s
store:
  revise_window: {REVISE_WINDOW_S:g}s
forwarder:
  batch_timeout: 100ms
"""
ERRORS_ONLY_POLICIES = """\
policies:
  - name: errors-only
    type: status_code
    status_code:
      status_codes: [ERROR]
"""


def test_late_error_revises_a_dropped_trace(env, receiver):
    policies = env.policies(ERRORS_ONLY_POLICIES)
    tg = env.start(REVISE_CONFIG, receiver.port, policies)
    poster = Poster(tg.traces_url)
    rng = random.Random(9909)
    a, b = complete_traces(rng, n=2, spans_per_trace=4, payload=200)
    ta, tb = a[0].trace_id, b[0].trace_id
    root_a, root_b = a[0].span_id, b[0].span_id

    def late(trace_id: str, parent: str, name: str, error: bool) -> SpanSpec:
        return SpanSpec(trace_id, sid(rng), parent, name, error=error, payload_bytes=200)

    def trigger(name: str) -> float:
        return tg.sample("tailgate_traces_decided_by_trigger_total", trigger=name)

    def late_drops() -> float:
        return tg.sample("tailgate_spans_dropped_total", reason="late_span_of_dropped_trace")

    # Two complete traces without an error: both dropped wait_after_root after their root.
    assert poster.post(build_request(a + b)) == 200
    assert wait_for(lambda: tg.decided_total() >= 2, 10), f"{tg.decided_total()} of 2 traces decided"
    decided_at = time.monotonic()  # both drops happened before this: their revise windows close before +3 s
    assert tg.decided_total() == 2 and trigger("root") == 2, \
        f"decided {tg.decided_total()}, by root {trigger('root')}: {tg.samples('tailgate_traces_decided_by_trigger_total')}"
    assert tg.sample("tailgate_spans_dropped_total", reason="policy") == len(a) + len(b)
    assert not receiver.wait_until(lambda rx: rx.span_count() > 0, 0.5), \
        f"{receiver.span_count()} spans of dropped traces were forwarded"

    # A late error for A within the revise window: the whole trace (read back from the store) plus the late span.
    late_a = late(ta, root_a, "late-error", error=True)
    late_before = late_drops()
    assert poster.post(build_request([late_a])) == 200
    want_a = {s.span_id for s in a} | {late_a.span_id}
    arrived = receiver.wait_until(lambda rx: rx.span_ids_of(ta) >= want_a, 5)
    assert arrived, (f"revised trace A: {len(receiver.span_ids_of(ta) & want_a)} of {len(want_a)} spans arrived; "
                     f"revised={trigger('revised')}, late drops {late_drops() - late_before}")
    assert wait_for(lambda: trigger("revised") == 1, 5), tg.samples("tailgate_traces_decided_by_trigger_total")
    revised_samples = [(labels, v) for labels, v in tg.samples("tailgate_traces_decided_by_trigger_total")
                       if labels.get("trigger") == "revised" and v]
    time.sleep(0.5)  # batch_timeout 100ms: a duplicate sent along would be here by now
    got_a = receiver.trace(ta)
    counts_a = Counter(s.span_id for s in got_a)
    assert set(counts_a) == want_a and set(counts_a.values()) == {1}, \
        f"trace A: span counts {dict(counts_a)}, want each of {sorted(want_a)} once"
    marks = {s.span_id: (s.attributes.get(POLICY), s.attributes.get(TRIGGER)) for s in got_a}
    assert set(marks.values()) == {("errors-only", "revised")}, f"trace A (policy, trigger) per span: {marks}"
    assert {s.span_id for s in got_a if s.status_code == 2} == {late_a.span_id}
    assert receiver.trace(tb) == [], "trace B was forwarded along with A's revision"
    late_drops_for_revising_span = late_drops() - late_before

    # A later span of A follows the keep.
    after_a = late(ta, root_a, "after-revision", error=False)
    assert poster.post(build_request([after_a])) == 200
    assert receiver.wait_until(lambda rx: after_a.span_id in rx.span_ids_of(ta), 5), \
        "a late span of the revised trace A was not forwarded"
    follower = next(s for s in receiver.trace(ta) if s.span_id == after_a.span_id)
    assert follower.attributes.get(POLICY) == "errors-only", dict(follower.attributes)
    assert trigger("revised") == 1, "the span after the revision revised A again"

    # Past B's revise window (plus a few decision ticks), a late error is only a late span of a dropped trace.
    closed = decided_at + REVISE_WINDOW_S + 0.5
    assert wait_for(lambda: time.monotonic() >= closed, REVISE_WINDOW_S + 2), "clock did not advance"
    late_b = late(tb, root_b, "too-late-error", error=True)
    before = late_drops()
    sent_b = time.monotonic()
    assert poster.post(build_request([late_b])) == 200
    assert wait_for(lambda: late_drops() == before + 1, 5), \
        f"late_span_of_dropped_trace went {before} -> {late_drops()}, want +1"
    leaked = receiver.wait_until(lambda rx: rx.trace(tb) != [], max(0.1, sent_b + 3.0 - time.monotonic()))
    assert not leaked, (f"trace B was revised after its revise window: {len(receiver.trace(tb))} spans arrived, "
                        f"marks {[(s.attributes.get(POLICY), s.attributes.get(TRIGGER)) for s in receiver.trace(tb)]}")
    assert trigger("revised") == 1 and tg.decided_total() == 3, \
        f"revised {trigger('revised')}, decided {tg.decided_total()}"
    assert {(s.trace_id, s.span_id) for s in receiver.spans()} == {(ta, i) for i in want_a | {after_a.span_id}}
    assert tg.forward_drops() == {r: 0 for r in FORWARD_DROP_REASONS}, tg.forward_drops()
    assert tg.alive()
    print(f"revise: A revised ({revised_samples}); late_span_of_dropped_trace counted {late_drops_for_revising_span:g} "
          f"for A's revising span; spans kept {tg.sample('tailgate_spans_kept_total'):g}, dropped by policy "
          f"{tg.sample('tailgate_spans_dropped_total', reason='policy'):g}")
    assert tg.terminate() == 0, tg.log_tail()
