"""OTLP/JSON with one malformed ID: partial success, as for protobuf, not a 400 for the whole request.

A trace or span ID that is not hex of the right length rejects its span alone: HTTP 200 with
{"partialSuccess":{"rejectedSpans":"1","errorMessage":...}} in JSON (the request's content type), and the
other spans of the same request are forwarded. Malformed JSON is still a 400 for the whole request.
"""

from __future__ import annotations

import json
import random
import time

import pytest
import requests

JSON = "application/json"


def json_span(trace_id: str, span_id: str, name: str, now: int) -> dict:
    """A root span with status ERROR: the default policies keep its trace."""
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "name": name,
        "kind": 2,
        "startTimeUnixNano": str(now),
        "endTimeUnixNano": str(now + 1_500_000),
        "status": {"code": 2, "message": "failed"},
    }


def json_request(spans: list[dict]) -> bytes:
    return json.dumps({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-partial"}}]},
        "scopeSpans": [{"scope": {"name": "tailgate.e2e.json"}, "spans": spans}],
    }]}).encode()


def post_json(url: str, body: bytes) -> requests.Response:
    return requests.post(url, data=body, headers={"Content-Type": JSON}, timeout=10)


@pytest.mark.parametrize("bad_trace_id, described", [
    ("5b8efff798038103d269b633813fc6zz", "is not hex ('z')"),   # right length, not hex
    ("5b8efff798038103d269b633813fc60", "has 31 characters"),   # odd length
    ("5b8efff798038103", "has 16 characters"),                  # half an ID
])
def test_json_bad_trace_id_rejects_only_its_span(tailgate, receiver, bad_trace_id, described):
    rng = random.Random(f"json-partial-{bad_trace_id}")
    now = time.time_ns()
    good = [(rng.randbytes(16).hex(), rng.randbytes(8).hex()) for _ in range(2)]
    bad_span_id = rng.randbytes(8).hex()
    spans = [
        json_span(good[0][0], good[0][1], "good.0", now),
        json_span(bad_trace_id, bad_span_id, "bad", now),
        # Upper-case hex is valid OTLP/JSON (case-insensitive): this span is accepted.
        json_span(good[1][0].upper(), good[1][1].upper(), "good.1", now),
    ]

    response = post_json(tailgate.traces_url, json_request(spans))
    assert response.status_code == 200, f"HTTP {response.status_code}: {response.text[:500]}"
    assert response.headers.get("Content-Type", "").startswith(JSON), response.headers
    reply = response.json()
    partial = reply.get("partialSuccess")
    assert partial is not None, reply
    assert int(partial["rejectedSpans"]) == 1, reply  # int64 is a decimal string in OTLP/JSON
    message = partial.get("errorMessage", "")
    assert "trace_id must be 16 bytes" in message, message
    assert "resourceSpans[0].scopeSpans[0].spans[1].traceId" in message, message
    assert f'"{bad_trace_id}" {described}' in message, message

    want = set(good)
    arrived = receiver.wait_until(lambda r: want <= {(s.trace_id, s.span_id) for s in r.spans()}, timeout=15)
    got = {(s.trace_id, s.span_id) for s in receiver.spans()}
    assert arrived, f"good spans missing downstream: {sorted(want - got)}"
    assert bad_span_id not in {span_id for _, span_id in got}, "the span with the malformed trace ID was forwarded"
    assert tailgate.alive()


def test_json_bad_parent_span_id_rejects_only_its_span(tailgate, receiver):
    rng = random.Random("json-partial-parent")
    now = time.time_ns()
    trace_id, root, child = rng.randbytes(16).hex(), rng.randbytes(8).hex(), rng.randbytes(8).hex()
    bad = json_span(trace_id, child, "bad.child", now)
    bad["parentSpanId"] = root[:15]  # 15 hex digits
    response = post_json(tailgate.traces_url, json_request([json_span(trace_id, root, "root", now), bad]))
    assert response.status_code == 200, f"HTTP {response.status_code}: {response.text[:500]}"
    partial = response.json().get("partialSuccess", {})
    assert int(partial.get("rejectedSpans", 0)) == 1, response.text
    assert "parent_span_id must be empty or 8 bytes" in partial.get("errorMessage", ""), response.text

    assert receiver.wait_until(lambda r: (trace_id, root) in {(s.trace_id, s.span_id) for s in r.spans()}, timeout=15)
    assert child not in receiver.span_ids_of(trace_id)


def test_json_syntax_error_is_still_400(tailgate, receiver):
    body = json_request([json_span("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "x", time.time_ns())])
    response = post_json(tailgate.traces_url, body[:-3])  # truncated: not a JSON document
    assert response.status_code == 400, f"HTTP {response.status_code}: {response.text[:500]}"
    assert response.headers.get("Content-Type", "").startswith(JSON), response.headers
    assert "invalid JSON" in response.json().get("message", ""), response.text
    # An ID of the wrong JSON type (not a string) is a schema error of the document: also 400.
    bad_type = json.loads(body)
    bad_type["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] = 12
    response = post_json(tailgate.traces_url, json.dumps(bad_type).encode())
    assert response.status_code == 400, f"HTTP {response.status_code}: {response.text[:500]}"
    assert "expected a hex string" in response.json().get("message", ""), response.text
    assert tailgate.alive()
