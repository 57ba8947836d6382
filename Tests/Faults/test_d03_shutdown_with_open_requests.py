"""d03 — shutdown blocked by a client holding a request open.

A client that sent the head of an HTTP export (Content-Length 100000) but only part of its body, or a
gRPC Export call whose message is unfinished, kept SIGTERM from completing: the servers waited for
those requests forever and buffered traces were never flushed. After the fix (top-level
`shutdown_timeout`), the process gives up on stalled requests, flushes what it holds, and exits 0
within shutdown_timeout (+ slack), with every span of the buffered ERROR traces written.
"""

from __future__ import annotations

import time

from faultlib import (LONG_TIMERS, close_all, delivery_report, http_head, open_stalled_grpc_call, raw_connect,
                      read_jsonl_spans, sdk_error_traces, wait_for)

SHUTDOWN_TIMEOUT_S = 6
SLACK_S = 4


def test_d03_shutdown_completes_despite_stalled_requests(tailgates, tmp_path):
    """d03: SIGTERM while one HTTP body and one gRPC message are half-sent: exit 0 in time, nothing lost."""
    out = tmp_path / "kept.jsonl"
    tg = tailgates(downstream=f"file:{out}", config=f"shutdown_timeout: {SHUTDOWN_TIMEOUT_S}s\n" + LONG_TIMERS)
    sent = sdk_error_traces("grpc", tg.grpc_endpoint, 40, 3, seed=3)
    assert wait_for(lambda: tg.total("tailgate_spans_received_total") >= len(sent), 5)

    held = []
    try:
        http = raw_connect(tg.http_port)
        held.append(http)
        http.sendall(http_head("POST", "/v1/traces", {"Host": f"127.0.0.1:{tg.http_port}",
                                                       "Content-Type": "application/x-protobuf",
                                                       "Content-Length": "100000"}) + b"\x0a" * 2000)
        held.append(open_stalled_grpc_call(tg.grpc_port))
        time.sleep(0.5)  # both requests reach the servers and are waiting for the rest
        tg.assert_alive("with two stalled requests ")

        code, seconds = tg.stop(timeout=SHUTDOWN_TIMEOUT_S + SLACK_S)
    finally:
        close_all(held)
    assert code is not None, (f"tailgate did not exit within {SHUTDOWN_TIMEOUT_S + SLACK_S}s of SIGTERM "
                              f"(shutdown_timeout {SHUTDOWN_TIMEOUT_S}s) while clients held requests open")
    assert code == 0, f"exit status {code} after {seconds:.1f}s"
    got, problems = read_jsonl_spans(out)
    report = delivery_report(sent, got)
    assert not report and not problems, f"file {out}: {report} {problems[:3]}"
