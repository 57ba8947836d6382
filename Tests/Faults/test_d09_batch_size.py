"""d09 — forwarded batches larger than max_batch_bytes.

A kept trace was appended to a batch whole, so one large trace (or a batch that was nearly full)
produced a downstream request far over `forwarder.max_batch_bytes`; a collector with the usual 4 MiB
gRPC message limit rejected it (RESOURCE_EXHAUSTED) and every span of that batch, small traces included,
was dropped. After the fix batches are split to stay under max_batch_bytes: every span arrives once.
"""

from __future__ import annotations

import os
import random
from collections import Counter

from faultlib import SizedReceiver, delivery_report, make_request, make_span, post_proto, rand_ids

MIB = 1024 * 1024
BIG_SPANS = 600
ATTR_BYTES = 10_000
SPANS_PER_REQUEST = 100  # ~1 MB per request, under max_request_bytes


def test_d09_batches_respect_max_batch_bytes(tailgates):
    """d09: a ~6 MB ERROR trace + 13 small ones through max_batch_bytes 3MiB into a 4 MiB-limit receiver."""
    rx = SizedReceiver(4 * MIB)
    rx.start()
    try:
        tg = tailgates(downstream=f"grpc://{rx.endpoint}", config=(
            "buffer:\n  wait_after_root: 1s\n  idle_timeout: 2s\n  max_trace_age: 1m\n"
            "forwarder:\n  max_batch_bytes: 3MiB\n  compression: none\n  batch_timeout: 200ms\n"))
        rng = random.Random(9)
        expected: list[tuple[str, str]] = []

        big_trace, big_root = rand_ids(rng)
        children = []
        for i in range(BIG_SPANS - 1):
            span_id = rng.randbytes(8).hex()
            children.append(make_span(big_trace, span_id, big_root, f"step.{i}",
                                      attrs={"payload": os.urandom(ATTR_BYTES // 2).hex()}))
            expected.append((big_trace, span_id))
        # The root (ERROR) goes last so the whole trace is buffered before wait_after_root starts.
        children.append(make_span(big_trace, big_root, "", "agent.run", error=True,
                                  attrs={"payload": os.urandom(ATTR_BYTES // 2).hex()}))
        expected.append((big_trace, big_root))
        for start in range(0, len(children), SPANS_PER_REQUEST):
            response = post_proto(tg.traces_url, make_request(children[start:start + SPANS_PER_REQUEST])
                                  .SerializeToString(), timeout=15)
            assert response.status_code == 200, f"big trace part {start}: HTTP {response.status_code}"

        small = []
        for i in range(13):
            trace_id, root = rand_ids(rng)
            child = rng.randbytes(8).hex()
            small += [make_span(trace_id, root, "", "agent.run", error=True),
                      make_span(trace_id, child, root, "tool", attrs={"i": i})]
            expected += [(trace_id, root), (trace_id, child)]
        response = post_proto(tg.traces_url, make_request(small).SerializeToString(), timeout=10)
        assert response.status_code == 200, f"small traces: HTTP {response.status_code}"

        want = set(expected)
        rx.wait_until(lambda r: want <= {(s.trace_id, s.span_id) for s in r.spans()} or not tg.alive(),
                      timeout=20)
        tg.assert_alive()
        got = Counter((s.trace_id, s.span_id) for s in rx.spans())
        report = delivery_report(expected, got)
        assert not report, (f"{report} (receiver got {sum(got.values())} spans in {rx.export_calls()} "
                            f"export calls; dropped: {tg.samples('tailgate_spans_dropped_total')})")
    finally:
        rx.stop(grace=0.5)
