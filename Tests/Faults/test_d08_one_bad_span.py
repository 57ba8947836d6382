"""d08 — one span with invalid UTF-8 poisoned the whole batch downstream.

A span whose name is not valid UTF-8 was accepted and forwarded as is; a strict downstream (any
protobuf implementation checking proto3 strings, like the Python receiver here) rejected the whole
batch, losing the good spans with it. After the fix the bad span is rejected at ingest as OTLP partial
success (rejected_spans = 1) and the good spans of the same request are forwarded.
"""

from __future__ import annotations

import random

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from faultlib import SHORT_TIMERS, ld_field, make_span, post_proto, rand_ids


def request_with_bad_span(good, bad) -> bytes:
    """ExportTraceServiceRequest bytes: one resource, one scope, spans [good0, BAD, good1, good2], where
    BAD is `bad` with the name field (5) = b'\\xff\\xfe' appended (the classes refuse to encode it)."""
    bad_bytes = bad.SerializeToString() + ld_field(5, b"\xff\xfe")
    resource = resource_pb2.Resource(attributes=[common_pb2.KeyValue(
        key="service.name", value=common_pb2.AnyValue(string_value="faults"))])
    scope = common_pb2.InstrumentationScope(name="tailgate.faults")
    spans = [good[0].SerializeToString(), bad_bytes, good[1].SerializeToString(), good[2].SerializeToString()]
    scope_spans = ld_field(1, scope.SerializeToString()) + b"".join(ld_field(2, s) for s in spans)
    resource_spans = ld_field(1, resource.SerializeToString()) + ld_field(2, scope_spans)
    return ld_field(1, resource_spans)


def test_d08_invalid_utf8_span_is_rejected_alone(tailgates, receiver):
    """d08: 3 good ERROR spans + 1 span with a non-UTF-8 name -> 200, rejected_spans 1, the 3 arrive."""
    tg = tailgates(downstream=f"grpc://{receiver.endpoint}", config=SHORT_TIMERS)
    rng = random.Random(8)
    good = [make_span(*rand_ids(rng), "", f"good.{i}", error=True) for i in range(3)]
    bad_trace, bad_span = rand_ids(rng)
    bad = make_span(bad_trace, bad_span, "", "", error=True)
    bad.ClearField("name")
    body = request_with_bad_span(good, bad)

    response = post_proto(tg.traces_url, body, timeout=10)
    assert response.status_code == 200, f"HTTP {response.status_code}: {response.content[:300]!r}"
    reply = trace_service_pb2.ExportTraceServiceResponse.FromString(response.content)
    assert reply.partial_success.rejected_spans == 1, f"want partial_success.rejected_spans 1, got: {reply}"

    want = {(s.trace_id.hex(), s.span_id.hex()) for s in good}
    arrived = receiver.wait_until(lambda r: want <= {(s.trace_id, s.span_id) for s in r.spans()}, timeout=10)
    got = {(s.trace_id, s.span_id) for s in receiver.spans()}
    assert arrived, f"good spans missing downstream: {sorted(want - got)}"
    assert bad_trace not in {t for t, _ in got}, "the invalid span was forwarded"
    tg.assert_alive()
