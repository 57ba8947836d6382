"""d12 — spans lost at shutdown were silent.

When the downstream was down at SIGTERM, the spans that could not be flushed within shutdown_timeout
disappeared without a trace in the log and the process still exited 0. After the fix the last log
line reports `spans_lost=N` with the reason (`shutdown_timeout`), and the exit status is 3 when
N > 0; a clean run reports `spans_lost=0` and exits 0.
"""

from __future__ import annotations

import random
import re

import pytest

from faultlib import (LONG_TIMERS, Receiver, delivery_report, downstream_port, export_error_traces_proto,
                      span_key_counts, wait_for)

SPANS_LOST = re.compile(r"spans_lost=(\d+)")


@pytest.mark.parametrize("downstream_state", ["down", "healthy"])
def test_d12_spans_lost_at_shutdown_are_reported(tailgates, downstream_state):
    """d12: SIGTERM with the downstream down -> exit 3 within ~8 s, last `spans_lost=N` line = spans sent,
    naming shutdown_timeout; with a healthy downstream -> spans_lost=0, exit 0."""
    port = downstream_port()
    rx = None
    if downstream_state == "healthy":
        rx = Receiver(port=port)
        rx.start()
    try:
        tg = tailgates(downstream=f"grpc://127.0.0.1:{port}", config="shutdown_timeout: 3s\n" + LONG_TIMERS)
        sent = export_error_traces_proto(tg.traces_url, 20, 3, random.Random(12), traces_per_request=10)
        assert wait_for(lambda: tg.total("tailgate_spans_received_total") >= len(sent), 5)

        code, seconds = tg.stop(timeout=8)
        log = tg.log_text()
        lines = [line for line in log.splitlines() if SPANS_LOST.search(line)]
        assert code is not None, f"still running 8s after SIGTERM (shutdown_timeout 3s)\n{tg.log_tail()}"
        assert lines, f"no `spans_lost=N` line in the output (exit {code})\n{tg.log_tail()}"
        final = lines[-1]
        lost = int(SPANS_LOST.search(final).group(1))
        if downstream_state == "down":
            assert lost == len(sent), f"spans_lost={lost}, but {len(sent)} kept spans could not be delivered: {final!r}"
            assert "shutdown_timeout" in final, f"the spans_lost line does not name the reason: {final!r}"
            assert code == 3, f"exit status {code} (want 3) with {lost} spans lost"
        else:
            assert lost == 0, f"healthy downstream, yet {final!r}"
            assert code == 0, f"exit status {code} (want 0) with a healthy downstream"
            report = delivery_report(sent, span_key_counts(rx))
            assert not report, report
        last = [line for line in log.splitlines() if line.strip()][-1]
        assert SPANS_LOST.search(last), f"`spans_lost=N` is not on the final line of the output:\n{tg.log_tail(2000)}"
    finally:
        if rx is not None:
            rx.stop(grace=0.5)
