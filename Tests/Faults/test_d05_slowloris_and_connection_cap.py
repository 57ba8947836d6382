"""d05 — slowloris and unbounded connections on the OTLP/HTTP port.

Clients that send an incomplete request head held a connection (and its buffers) forever, and any
number of connections was accepted. After the fix, `limits.read_header_timeout` closes a connection
whose request head is not complete in time, and `limits.max_connections` caps open HTTP connections:
beyond it a new connection is refused or closed without being served, and service resumes once
connections close.
"""

from __future__ import annotations

import random
import socket
import time

import requests

from faultlib import SHORT_TIMERS, close_all, closed_by_peer, make_request, make_span, post_proto, rand_ids, raw_connect

PARTIAL_HEAD = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n"


def small_export() -> bytes:
    trace_id, span_id = rand_ids(random.Random())
    return make_request([make_span(trace_id, span_id, "", "probe")]).SerializeToString()


def test_d05a_slowloris_heads_are_cut_off(tailgates, receiver):
    """d05 (a): 30 connections with an unfinished request head are closed within ~3 s (read_header_timeout 1s)."""
    tg = tailgates(downstream=f"grpc://{receiver.endpoint}",
                   config=SHORT_TIMERS + "limits:\n  read_header_timeout: 1s\n  max_connections: 20\n")
    socks, refused = [], 0
    try:
        for _ in range(30):
            try:
                s = raw_connect(tg.http_port)
                s.sendall(PARTIAL_HEAD)
                socks.append(s)
            except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
                refused += 1
        sent_at = time.monotonic()
        still_open = []
        for i, s in enumerate(socks):
            if not closed_by_peer(s, max(0.0, sent_at + 3.5 - time.monotonic())):
                still_open.append(i)
        assert not still_open, (f"{len(still_open)} of {len(socks)} slowloris connections still open "
                                f"{time.monotonic() - sent_at:.1f}s after their partial head ({refused} refused)")
    finally:
        close_all(socks)
    tg.assert_alive()
    response = post_proto(tg.traces_url, small_export(), timeout=5)
    assert response.status_code == 200, f"a normal export after the slowloris: HTTP {response.status_code}"


def test_d05b_connection_cap(tailgates, receiver):
    """d05 (b): with max_connections 5 and 5 idle connections held, an export is not served; once they
    close, an export succeeds within a few seconds."""
    tg = tailgates(downstream=f"grpc://{receiver.endpoint}",
                   config=SHORT_TIMERS + "limits:\n  read_header_timeout: 30s\n  max_connections: 5\n")
    held = []
    try:
        # Hold 5 connections the server has admitted. The readiness probe's own connection may still count
        # for a moment, so a held connection closed at once is replaced (bounded).
        for _ in range(5):
            gone = [s for s in held if closed_by_peer(s, 0.01)]
            close_all(gone)
            held = [s for s in held if s not in gone]
            while len(held) < 5:
                held.append(raw_connect(tg.http_port))
            time.sleep(0.3)
            if not any(closed_by_peer(s, 0.01) for s in held):
                break
        else:
            raise AssertionError("could not hold 5 connections open: the server kept closing them")
        outcome = None
        try:
            response = post_proto(tg.traces_url, small_export(), timeout=3)
            outcome = f"HTTP {response.status_code}"
            served = response.status_code not in (503,)
        except requests.exceptions.ConnectionError as error:  # refused, reset, closed without a response
            served = False
            outcome = f"connection error: {error}"
        except requests.exceptions.Timeout as error:
            served = None
            outcome = f"timed out without an answer: {error}"
        assert served is False, (f"export with {len(held)} connections held and max_connections 5: {outcome} "
                                 f"(want the connection refused/closed, or 503)")
    finally:
        close_all(held)

    deadline = time.monotonic() + 5
    last = None
    while time.monotonic() < deadline:
        try:
            response = post_proto(tg.traces_url, small_export(), timeout=2)
            last = f"HTTP {response.status_code}"
            if response.status_code == 200:
                break
        except requests.exceptions.RequestException as error:
            last = repr(error)
        time.sleep(0.2)
    assert last == "HTTP 200", f"no successful export within 5s of closing the held connections: {last}"
