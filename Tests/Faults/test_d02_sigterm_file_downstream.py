"""d02 — SIGTERM with the file: downstream lost buffered spans (3 runs out of 5).

On SIGTERM tailgate decides every buffered trace and must flush the kept spans before exiting; with
`--downstream file:PATH` the file writer was closed before (or while) the shutdown flush wrote, so
part of the kept spans never reached the file. After the fix: exit status 0 and the file holds every
span, exactly once, on every run.
"""

from __future__ import annotations

from faultlib import LONG_TIMERS, delivery_report, read_jsonl_spans, sdk_error_traces, wait_for

N_TRACES = 1000
SPANS_PER_TRACE = 2
CYCLES = 3


def test_d02_sigterm_flushes_every_span_to_file(tailgates, tmp_path):
    """d02: SIGTERM with ~1,000 buffered ERROR traces and a file: downstream, 3 cycles."""
    failures = []
    for cycle in range(CYCLES):
        out = tmp_path / f"kept-{cycle}.jsonl"
        tg = tailgates(downstream=f"file:{out}", config=LONG_TIMERS, metrics=True, name=f"cycle{cycle}")
        sent = sdk_error_traces("grpc", tg.grpc_endpoint, N_TRACES, SPANS_PER_TRACE, seed=200 + cycle)
        # Every span is in the buffer (received), none decided yet (10 min timers).
        assert wait_for(lambda: tg.total("tailgate_spans_received_total") >= len(sent), 5), \
            f"cycle {cycle}: tailgate_spans_received_total {tg.total('tailgate_spans_received_total')} < {len(sent)}"
        code, seconds = tg.stop(timeout=20)
        got, problems = read_jsonl_spans(out)
        report = delivery_report(sent, got)
        if code != 0 or report or problems:
            failures.append(f"cycle {cycle}: exit {code} after {seconds:.1f}s; file has {sum(got.values())} "
                            f"of {len(sent)} spans: {report or 'complete'} {problems[:3]}")
    assert not failures, "\n".join(failures)
