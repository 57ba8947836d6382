"""d06 — unbounded memory for request bodies in flight.

Each OTLP/HTTP request may be up to max_request_bytes, but any number of them could be buffered at
once: a few slow clients announcing large bodies pinned unbounded memory. After the fix,
`limits.max_inflight_bytes` bounds the bytes of request bodies held at once: a request whose
Content-Length does not fit in what is left is answered 429 with Retry-After at once, before its body
is read; a request that fits is still served.
"""

from __future__ import annotations

import random
import time

from faultlib import (SHORT_TIMERS, close_all, drain_quietly, http_head, make_request, make_span, post_proto,
                      rand_ids, raw_connect, read_http_response_head)

MIB = 1024 * 1024
BIG = int(3.5 * MIB)


def big_head(port: int) -> bytes:
    return http_head("POST", "/v1/traces", {"Host": f"127.0.0.1:{port}", "Content-Type": "application/x-protobuf",
                                            "Content-Length": str(BIG)})


def test_d06_inflight_bytes_are_bounded(tailgates, receiver):
    """d06: 3 held 3.5 MiB bodies (half sent); a 4th 3.5 MiB request gets 429 + Retry-After without its
    body; a small request still gets 200."""
    tg = tailgates(downstream=f"grpc://{receiver.endpoint}",
                   config=SHORT_TIMERS + "limits:\n  max_request_bytes: 4MiB\n  max_inflight_bytes: 8MiB\n")
    held, notes = [], []
    try:
        half = b"\x0a" * (BIG // 2)  # bytes of a body that never completes
        for i in range(3):
            s = raw_connect(tg.http_port, timeout=5)
            held.append(s)
            try:
                s.sendall(big_head(tg.http_port) + half)
            except OSError as error:  # refused early (e.g. by a reservation scheme): fine, keep going
                notes.append(f"held request {i}: {error!r}")
        time.sleep(0.5)  # the server has read the halves
        drain_quietly(held)

        fourth = raw_connect(tg.http_port, timeout=5)
        held.append(fourth)
        fourth.sendall(big_head(tg.http_port))  # the head only: it must be answered without the body
        try:
            status, headers, raw = read_http_response_head(fourth, timeout=5)
        except (TimeoutError, ConnectionError, OSError) as error:
            raise AssertionError(f"4th 3.5 MiB request (body not sent): no response head: {error} "
                                 f"{notes}") from error
        assert status == 429, f"4th request: HTTP {status}, want 429\n{raw[:400]!r}"
        assert "retry-after" in headers, f"429 without Retry-After: {raw[:400]!r}"

        trace_id, span_id = rand_ids(random.Random())
        small = make_request([make_span(trace_id, span_id, "", "small", error=True)]).SerializeToString()
        response = post_proto(tg.traces_url, small, timeout=5)
        assert response.status_code == 200, f"small request while 3 are held: HTTP {response.status_code}"
        tg.assert_alive()
    finally:
        close_all(held)
