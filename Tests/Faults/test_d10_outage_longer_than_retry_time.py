"""d10 — a downstream outage longer than max_retry_time lost kept traces.

Batches were dropped (`retries_exhausted`) once `forwarder.max_retry_time` passed, even though the
downstream was merely unreachable and came back. After the fix an outage longer than max_retry_time
loses nothing: when the downstream returns, every kept span arrives, and no drop is counted.
"""

from __future__ import annotations

import random
import time

from faultlib import Receiver, delivery_report, downstream_port, export_error_traces_proto, span_key_counts

OUTAGE_S = 6.0


def test_d10_outage_longer_than_max_retry_time_loses_nothing(tailgates):
    """d10: receiver down for 6 s with max_retry_time 2s; when it starts, every span arrives, 0 drops."""
    port = downstream_port()
    tg = tailgates(downstream=f"grpc://127.0.0.1:{port}", config=(
        "buffer:\n  wait_after_root: 200ms\n  idle_timeout: 1s\n  max_trace_age: 30s\n"
        "forwarder:\n  max_retry_time: 2s\n  initial_backoff: 100ms\n  max_backoff: 500ms\n"
        "  batch_timeout: 100ms\n"))
    down_since = time.monotonic()
    sent = export_error_traces_proto(tg.traces_url, 30, 3, random.Random(10), traces_per_request=10)
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_since)))
    tg.assert_alive("during the outage ")

    rx = Receiver(port=port)
    assert rx.start() == port
    try:
        want = set(sent)
        rx.wait_until(lambda r: want <= {(s.trace_id, s.span_id) for s in r.spans()}, timeout=15)
        report = delivery_report(sent, span_key_counts(rx))
        dropped = {k: v for k, v in tg.samples("tailgate_spans_dropped_total").items() if v}
        assert not report, f"after a {OUTAGE_S:.0f}s outage: {report}; drops: {dropped}"
        assert not dropped, f"spans counted as dropped: {dropped}"
        tg.assert_alive()
    finally:
        rx.stop(grace=0.5)
