"""End-to-end tests: OpenTelemetry Python SDK -> tailgate -> recording receiver.

Policies (policies/default.yaml): keep a trace if any span has status ERROR, or
if its total tokens reach 10,000, else keep it iff
xxh3_64(trace_id_raw_16_bytes, seed=0) < int(10 / 100 * 2**64).
So every test knows exactly which traces must arrive, and that no other may.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import threading
import time
from collections import Counter

import grpc
import requests
import xxhash
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from agent import ERROR, HIGH_TOKENS, ORDINARY, GeneratedSpan, GeneratedTrace, RunResult, run_agent

TOKEN_THRESHOLD = 10_000
SAMPLE_PERCENT = 10
HASH_THRESHOLD = int(SAMPLE_PERCENT / 100 * 2**64)
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
DELIVERY_TIMEOUT_S = 30.0
MAX_REQUEST_BYTES = 1024 * 1024
PROTOBUF = "application/x-protobuf"
JSON = "application/json"


# --------------------------------------------------------------------------
# Expected decisions


def hash_selected(trace_id_hex: str) -> bool:
    return xxhash.xxh3_64_intdigest(bytes.fromhex(trace_id_hex), seed=0) < HASH_THRESHOLD


def must_keep(t: GeneratedTrace) -> bool:
    return t.has_error or t.total_tokens >= TOKEN_THRESHOLD or hash_selected(t.trace_id)


def tokens_by_rule(attributes) -> int:
    """A span's tokens: (input_tokens, else prompt_tokens) + (output_tokens, else completion_tokens)."""
    def pick(current: str, deprecated: str) -> int:
        return int(attributes.get(current, attributes.get(deprecated, 0)))
    return (pick("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
            + pick("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"))


def is_ordinary(t: GeneratedTrace) -> bool:
    return not t.has_error and t.total_tokens < TOKEN_THRESHOLD


def describe(t: GeneratedTrace) -> str:
    return f"{t.trace_id} [{t.category}: {t.variant}; tokens={t.total_tokens}; hash_selected={hash_selected(t.trace_id)}]"


# --------------------------------------------------------------------------
# Delivery checks


def _received_ids(receiver, t: GeneratedTrace, received=None) -> set[str]:
    spans = received.get(t.trace_id, []) if received is not None else receiver.trace(t.trace_id)
    return {s.span_id for s in spans}


def all_complete(receiver, traces: list[GeneratedTrace]) -> bool:
    received = receiver.traces()
    return all(_received_ids(receiver, t, received) == t.span_ids for t in traces)


def delivery_problems(receiver, traces: list[GeneratedTrace]) -> list[str]:
    """Everything wrong with what the receiver got, given what was generated."""
    received = receiver.traces()
    generated = {t.trace_id: t for t in traces}
    problems: list[str] = []

    def note(kind: str, items: list[str]) -> None:
        if items:
            shown = "\n    ".join(items[:15])
            more = f"\n    ... and {len(items) - 15} more" if len(items) > 15 else ""
            problems.append(f"{kind} ({len(items)}):\n    {shown}{more}")

    missing = [t for t in traces if must_keep(t) and t.trace_id not in received]
    by_category = Counter(t.category for t in missing)
    note(f"kept traces that never arrived {dict(by_category)}", [describe(t) for t in missing])
    note("dropped traces that arrived anyway",
         [describe(t) for t in traces if not must_keep(t) and t.trace_id in received])
    note("unknown trace ids that arrived", [tid for tid in received if tid not in generated])

    incomplete, duplicated, altered = [], [], []
    for tid, spans in received.items():
        t = generated.get(tid)
        if t is None:
            continue
        ids = [s.span_id for s in spans]
        dupes = sorted(i for i, n in Counter(ids).items() if n > 1)
        if dupes:
            duplicated.append(f"{describe(t)}: spans received more than once: {dupes}")
        want = {s.span_id: s for s in t.spans}
        if set(ids) != set(want):
            lost = sorted(f"{want[i].name}@{want[i].service}" for i in set(want) - set(ids))
            extra = sorted(set(ids) - set(want))
            incomplete.append(f"{describe(t)}: missing {lost}, unexpected span ids {extra}")
        for s in spans:
            g = want.get(s.span_id)
            if g is None:
                continue
            got = (s.parent_span_id, s.name, s.service_name, s.status_code == 2)
            exp = (g.parent_span_id, g.name, g.service, g.error)
            if got != exp:
                altered.append(f"{tid}/{s.span_id}: (parent, name, service, error) {got} != {exp}")
    note("incomplete traces", incomplete)
    note("duplicate spans", duplicated)
    note("spans altered in transit", altered)
    return problems


def assert_delivered(receiver, traces: list[GeneratedTrace], context: str = "") -> None:
    problems = delivery_problems(receiver, traces)
    assert not problems, f"{context}\n" + "\n".join(problems)


def wait_for_delivery(receiver, traces: list[GeneratedTrace], timeout: float = DELIVERY_TIMEOUT_S) -> bool:
    kept = [t for t in traces if must_keep(t)]
    return receiver.wait_until(lambda r: all_complete(r, kept), timeout=timeout)


def assert_sample_share(receiver, traces: list[GeneratedTrace]) -> None:
    ordinary = [t for t in traces if is_ordinary(t)]
    arrived = receiver.trace_ids()
    share = sum(t.trace_id in arrived for t in ordinary) / len(ordinary)
    assert abs(share - SAMPLE_PERCENT / 100) <= 0.02, \
        f"{share:.2%} of {len(ordinary)} ordinary traces arrived; expected {SAMPLE_PERCENT}% +/- 2%"


# --------------------------------------------------------------------------
# Traffic helpers


def generate(tailgate, protocol: str, n: int, seed: int, **kwargs) -> RunResult:
    endpoint = tailgate.grpc_endpoint if protocol == "grpc" else tailgate.traces_url
    result = run_agent(protocol, endpoint, n, seed, **kwargs)
    assert result.ok, (f"the SDK could not export everything over {protocol}: "
                       f"{result.failed_exports} failed exports ({result.failed_spans} spans), "
                       f"{result.spans_exported}/{result.spans_created} spans exported")
    return result


def assert_generator_covers_edge_cases(traces: list[GeneratedTrace]) -> None:
    variants = " | ".join(t.variant for t in traces)
    for needle in ("total=9999", "total=10000", "every span<10000", "error on ['tool']", "style=old"):
        assert needle in variants, f"generator produced no trace with {needle!r}"
    counts = Counter(t.category for t in traces)
    assert counts[ERROR] and counts[HIGH_TOKENS] and counts[ORDINARY], counts


def spans_received_metric(tailgate) -> float:
    value = tailgate.counter("tailgate_spans_received_total")
    assert value is not None, "tailgate_spans_received_total missing from /metrics:\n" + tailgate.metrics_text()[:3000]
    return value


def assert_spans_received_at_least(tailgate, expected: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (value := spans_received_metric(tailgate)) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert value >= expected, f"tailgate_spans_received_total = {value}, but the SDK exported {expected} spans"


def assert_clean_exit(tailgate) -> None:
    code = tailgate.terminate()
    assert code == 0, f"tailgate exited with code {code} after SIGTERM"


def post(url: str, body: bytes, content_type: str, *, gzip_body: bool = False,
         timeout: float = 15.0) -> requests.Response:
    headers = {"Content-Type": content_type}
    if gzip_body:
        body = gzip.compress(body, compresslevel=6)
        headers["Content-Encoding"] = "gzip"
    try:
        return requests.post(url, data=body, headers=headers, timeout=timeout)
    except requests.ConnectionError as error:
        raise AssertionError(f"POST {url} ({content_type}, {len(body)} bytes, gzip={gzip_body}): "
                             f"connection failed without an HTTP response: {error}") from error


def grpc_raw_export(endpoint: str, payload: bytes, *, gzip_payload: bool = False,
                    timeout: float = 15.0) -> tuple[grpc.StatusCode, str]:
    """Sends raw bytes as an Export request (identity serializers); returns (code, details)."""
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(endpoint, options=options) as channel:
        export = channel.unary_unary(EXPORT_METHOD, request_serializer=None, response_deserializer=None)
        compression = grpc.Compression.Gzip if gzip_payload else grpc.Compression.NoCompression
        try:
            export(payload, timeout=timeout, compression=compression)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as error:
            return error.code(), error.details() or ""


def assert_proto_success(response: requests.Response) -> None:
    assert response.status_code == 200, f"{response.status_code}: {response.content[:300]!r}"
    assert response.headers.get("Content-Type", "").startswith(PROTOBUF), response.headers
    reply = trace_service_pb2.ExportTraceServiceResponse.FromString(response.content)
    assert not reply.HasField("partial_success") or reply.partial_success.rejected_spans == 0, reply


def assert_json_success(response: requests.Response) -> None:
    assert response.status_code == 200, f"{response.status_code}: {response.text[:300]}"
    assert response.headers.get("Content-Type", "").startswith(JSON), response.headers
    reply = response.json()
    assert isinstance(reply, dict), reply
    assert int(reply.get("partialSuccess", {}).get("rejectedSpans", 0)) == 0, reply


def oversized_request(payload_bytes: int, rng: random.Random) -> bytes:
    """A well-formed request made large by one string attribute (so only its size is wrong)."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    kv = resource_spans.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "oversized"
    span = resource_spans.scope_spans.add().spans.add()
    span.trace_id = rng.randbytes(16)
    span.span_id = rng.randbytes(8)
    span.name = "oversized"
    span.start_time_unix_nano = span.end_time_unix_nano = time.time_ns()
    span.status.code = 2  # would be kept if it were accepted
    kv = span.attributes.add()
    kv.key, kv.value.string_value = "blob", "a" * payload_bytes
    return request.SerializeToString()


# --------------------------------------------------------------------------
# Hand-built OTLP/JSON


def _json_value(value):
    if isinstance(value, dict):  # already an AnyValue (e.g. intValue as a JSON number)
        return value
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": value}


def json_attributes(attrs: dict) -> list[dict]:
    return [{"key": k, "value": _json_value(v)} for k, v in attrs.items()]


def json_span(trace_id: str, span_id: str, parent: str | None, name: str, *, kind: int = 1,
              attrs: dict | None = None, error: bool = False, start_ns: int = 0) -> dict:
    span = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(start_ns + 1_500_000),
        "attributes": json_attributes(attrs or {}),
        "status": {"code": 2, "message": "tool crashed"} if error else {},
    }
    if parent is not None:  # a root gets either "" or no key at all
        span["parentSpanId"] = parent
    return span


def json_request(groups: list[tuple[str, list[dict]]]) -> bytes:
    return json.dumps({"resourceSpans": [
        {
            "resource": {"attributes": json_attributes({"service.name": service})},
            "scopeSpans": [{"scope": {"name": "tailgate.e2e.json", "version": "1"}, "spans": spans}],
        }
        for service, spans in groups
    ]}).encode()


def pick_trace_id(rng: random.Random, selected: bool) -> str:
    while True:
        trace_id = rng.randbytes(16).hex()
        if hash_selected(trace_id) == selected:
            return trace_id


# --------------------------------------------------------------------------
# Tests


def test_harness_sdk_straight_to_receiver(receiver):
    """No tailgate: the generator and the receiver agree on every span (checks the harness itself)."""
    result = run_agent("grpc", receiver.endpoint, 600, seed=7, gzip=True, rate=None)
    assert result.ok, result
    assert_generator_covers_edge_cases(result.traces)
    assert receiver.wait_until(lambda r: all_complete(r, result.traces), timeout=20)
    received = receiver.traces()
    assert set(received) == {t.trace_id for t in result.traces}
    assert receiver.span_count() == result.spans_created  # no duplicates
    for t in result.traces:
        assert {(s.span_id, s.parent_span_id, s.name, s.service_name, s.status_code == 2)
                for s in received[t.trace_id]} == \
               {(s.span_id, s.parent_span_id, s.name, s.service, s.error) for s in t.spans}, describe(t)
        assert t.services == {"agent", "tools"}
        assert sum(tokens_by_rule(s.attributes) for s in received[t.trace_id]) == t.total_tokens, describe(t)
        assert any(s.status_code == 2 for s in received[t.trace_id]) == t.has_error, describe(t)



def test_grpc_gzip_decisions_are_timer_driven(tailgate, receiver):
    result = generate(tailgate, "grpc", n=2500, seed=101, gzip=True, rate=1000)
    assert_generator_covers_edge_cases(result.traces)

    # No SIGTERM yet: every kept trace must arrive through wait_after_root / idle_timeout alone.
    arrived = wait_for_delivery(receiver, result.traces)
    assert tailgate.alive(), f"tailgate died (exit code {tailgate.proc.poll()})"
    if not arrived:
        assert_delivered(receiver, result.traces,
                         f"not everything arrived within {DELIVERY_TIMEOUT_S:.0f}s without SIGTERM")
    assert_spans_received_at_least(tailgate, result.spans_exported)

    assert_clean_exit(tailgate)
    assert_delivered(receiver, result.traces, "after SIGTERM")
    assert_sample_share(receiver, result.traces)


def test_http_protobuf_gzip_flushes_on_sigterm(tailgate, receiver):
    result = generate(tailgate, "http", n=1500, seed=202, gzip=True, rate=1000)
    assert_generator_covers_edge_cases(result.traces)
    assert_spans_received_at_least(tailgate, result.spans_exported)

    assert_clean_exit(tailgate)  # right after the SDK flushed: SIGTERM decides whatever is buffered
    assert_delivered(receiver, result.traces, "after SIGTERM")
    assert_sample_share(receiver, result.traces)


def test_http_json_hand_built(tailgate, receiver):
    rng = random.Random(303)
    now = time.time_ns()
    sid = lambda: rng.randbytes(8).hex()  # noqa: E731

    # A: error only on the tool span, in the other service; sent as two requests, tools first.
    a = pick_trace_id(rng, selected=False)
    a_root, a_llm, a_tool = sid(), sid(), sid()
    a_spans_agent = [
        json_span(a, a_root, "", "agent.run", kind=2, start_ns=now,
                  attrs={"gen_ai.operation.name": "invoke_agent"}),
        json_span(a, a_llm, a_root, "llm.call", kind=3, start_ns=now, attrs={
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4",
            "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30}),
    ]
    a_spans_tools = [json_span(a, a_tool, a_llm, "tool.execute", kind=2, error=True, start_ns=now,
                               attrs={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "sql_query",
                                      "error.type": "ToolError"})]

    # B: exactly 10,000 tokens from deprecated names (one as a JSON number), no span >= 10,000,
    # ids in upper-case hex.
    b = pick_trace_id(rng, selected=False)
    b_root, b_llm1, b_llm2 = sid(), sid(), sid()
    b_spans = [
        json_span(b.upper(), b_root.upper(), None, "agent.run", kind=2, start_ns=now),
        json_span(b.upper(), b_llm1.upper(), b_root.upper(), "llm.call", kind=3, start_ns=now, attrs={
            "gen_ai.operation.name": "chat", "gen_ai.usage.prompt_tokens": 6000,
            "gen_ai.usage.completion_tokens": {"intValue": 1000}}),
        json_span(b.upper(), b_llm2.upper(), b_root.upper(), "llm.call", kind=3, start_ns=now, attrs={
            "gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 2000,
            "gen_ai.usage.output_tokens": 1000}),
    ]

    # C: ordinary and hash-selected (must arrive). D: 9,999 tokens, not selected (must not).
    c = pick_trace_id(rng, selected=True)
    c_root, c_llm = sid(), sid()
    c_spans = [json_span(c, c_root, "", "agent.run", start_ns=now),
               json_span(c, c_llm, c_root, "llm.call", start_ns=now,
                         attrs={"gen_ai.usage.input_tokens": 70, "gen_ai.usage.output_tokens": 30})]
    d = pick_trace_id(rng, selected=False)
    d_root, d_llm = sid(), sid()
    d_spans = [json_span(d, d_root, None, "agent.run", start_ns=now),
               json_span(d, d_llm, d_root, "llm.call", start_ns=now,
                         attrs={"gen_ai.usage.input_tokens": 9000, "gen_ai.usage.output_tokens": 999})]

    def gen(trace_id, category, tokens, spans):
        return GeneratedTrace(trace_id, category, tokens, category == ERROR, "hand-built JSON",
                              tuple(GeneratedSpan(*s, role=s[2], error=err) for *s, err in spans))

    expected = [
        gen(a, ERROR, 150, [(a_root, "", "agent.run", "agent", False), (a_llm, a_root, "llm.call", "agent", False),
                            (a_tool, a_llm, "tool.execute", "tools", True)]),
        gen(b, HIGH_TOKENS, 10_000, [(b_root, "", "agent.run", "agent", False),
                                     (b_llm1, b_root, "llm.call", "agent", False),
                                     (b_llm2, b_root, "llm.call", "agent", False)]),
        gen(c, ORDINARY, 100, [(c_root, "", "agent.run", "agent", False), (c_llm, c_root, "llm.call", "agent", False)]),
        gen(d, ORDINARY, 9_999, [(d_root, "", "agent.run", "agent", False), (d_llm, d_root, "llm.call", "agent", False)]),
    ]

    assert_json_success(post(tailgate.traces_url, json_request([("tools", a_spans_tools)]), JSON, gzip_body=True))
    assert_json_success(post(tailgate.traces_url, json_request([
        ("agent", a_spans_agent + b_spans),
        ("agent", c_spans + d_spans),
    ]), JSON))

    wait_for_delivery(receiver, expected, timeout=15)
    assert_clean_exit(tailgate)
    assert_delivered(receiver, expected, "hand-built OTLP/JSON")

    tool_span = next(s for s in receiver.trace(a) if s.span_id == a_tool)
    assert tool_span.status_code == 2 and tool_span.attributes.get("error.type") == "ToolError", tool_span
    llm1 = next(s for s in receiver.trace(b) if s.span_id == b_llm1)
    assert llm1.attributes.get("gen_ai.usage.prompt_tokens") == 6000, llm1.attributes
    assert llm1.attributes.get("gen_ai.usage.completion_tokens") == 1000, llm1.attributes


def test_bad_input_harms_nothing_else(tailgate, receiver):
    box: dict[str, RunResult] = {}
    stop = threading.Event()

    def good_traffic():
        box["result"] = run_agent("grpc", tailgate.grpc_endpoint, 20_000, seed=404, gzip=True,
                                  rate=250, stop_event=stop)

    worker = threading.Thread(target=good_traffic, name="good-traffic", daemon=True)
    worker.start()
    problems: list[str] = []
    rng = random.Random(404)

    def expect(condition: bool, message: str) -> None:
        if not condition:
            problems.append(message)

    try:
        receiver.wait_until(lambda r: r.span_count() > 0 or not worker.is_alive(), timeout=15)
        url = tailgate.traces_url

        # (a) malformed protobuf over gRPC -> INVALID_ARGUMENT with a message.
        for payload in (b"\x0a\x10\x01\x02", b"\x0a\x03\x12\x05\x0a", b"\x0a" + b"\xff" * 11):
            code, details = grpc_raw_export(tailgate.grpc_endpoint, payload)
            expect(code == grpc.StatusCode.INVALID_ARGUMENT and details.strip(),
                   f"gRPC malformed {payload!r}: got {code} {details!r}, want INVALID_ARGUMENT with a message")

        # (b) malformed protobuf / JSON over HTTP -> 400 with a specific message.
        response = post(url, b"\x0a\x10\x01\x02", PROTOBUF)
        message = ""
        if response.status_code == 400:
            try:
                message = status_pb2.Status.FromString(response.content).message
            except Exception as error:  # noqa: BLE001
                problems.append(f"HTTP malformed protobuf: body is not a google.rpc.Status: {error}")
        expect(response.status_code == 400 and
               re.search(r"proto|wire|offset|byte|truncat|length|varint|\d", message, re.I),
               f"HTTP malformed protobuf: got {response.status_code} {response.content[:300]!r}, "
               f"want 400 with a google.rpc.Status naming the problem")
        for bad_json in (b'{"resourceSpans": [ {"scopeSpans": ', b'{"resourceSpans": [}', b"not json"):
            response = post(url, bad_json, JSON)
            try:
                body = response.json()
            except ValueError:
                body = {}
            message = body.get("message", "") if isinstance(body, dict) else ""
            expect(response.status_code == 400 and isinstance(body, dict) and body.get("code") == 3 and
                   re.search(r"json|offset|byte|position|line|column|\d", message, re.I),
                   f"HTTP malformed JSON {bad_json!r}: got {response.status_code} {response.text[:300]!r}, "
                   f'want 400 with {{"code": 3, "message": <says what is wrong>}}')

        # (c) over the 1 MiB limit after decompression -> 413 / RESOURCE_EXHAUSTED.
        oversized = oversized_request(MAX_REQUEST_BYTES + 512 * 1024, rng)
        bomb = oversized_request(50 * 1024 * 1024, rng)
        for body, gz, label in ((oversized, False, "plain 1.5 MiB"), (bomb, True, "gzip bomb (50 MiB)")):
            response = post(url, body, PROTOBUF, gzip_body=gz)
            expect(response.status_code == 413, f"HTTP {label}: got {response.status_code}, want 413")
            code, details = grpc_raw_export(tailgate.grpc_endpoint, body, gzip_payload=gz)
            expect(code == grpc.StatusCode.RESOURCE_EXHAUSTED,
                   f"gRPC {label}: got {code} {details!r}, want RESOURCE_EXHAUSTED")

        # (d) wrong content type -> 415.
        response = post(url, trace_service_pb2.ExportTraceServiceRequest().SerializeToString(), "text/plain")
        expect(response.status_code == 415, f"HTTP text/plain: got {response.status_code}, want 415")

        # The front door still works for well-formed requests.
        assert_proto_success(post(url, trace_service_pb2.ExportTraceServiceRequest().SerializeToString(), PROTOBUF))
        assert_json_success(post(url, b"{}", JSON))
        time.sleep(0.5)  # let some good traffic follow the bad input
    finally:
        stop.set()
        worker.join(timeout=90)

    assert not worker.is_alive(), "the good-traffic generator did not finish within 90s"
    assert not problems, "bad input was not rejected as specified:\n  " + "\n  ".join(problems)
    assert tailgate.alive(), f"tailgate died (exit code {tailgate.proc.poll()})"
    result = box.get("result")
    assert result is not None, "the good-traffic generator raised (see the captured log)"
    assert result.ok, (f"good traffic was rejected: {result.failed_exports} failed exports, "
                       f"{result.spans_exported}/{result.spans_created} spans exported")
    errors = [t for t in result.traces if t.has_error]
    assert len(result.traces) >= 200 and errors, f"too little good traffic: {len(result.traces)} traces"

    wait_for_delivery(receiver, result.traces)
    missing_errors = [describe(t) for t in errors if receiver.span_ids_of(t.trace_id) != t.span_ids]
    assert not missing_errors, "error traces missing or incomplete:\n  " + "\n  ".join(missing_errors)
    assert_clean_exit(tailgate)
    assert_delivered(receiver, result.traces, "good traffic sent alongside bad input")
