"""d11 — large OTLP/JSON bodies starved everything else.

Decoding OTLP/JSON ran on the networking event loop, so two concurrent 15 MiB JSON exports froze the
other connections for seconds: /metrics scrapes and small exports timed out. After the fix heavy
decoding is moved off the event loop: while two 15 MiB JSON bodies are processed, GET /metrics answers
within 2 s and a small protobuf export within 5 s.
"""

from __future__ import annotations

import random
import threading
import time

import requests

from faultlib import SHORT_TIMERS, make_request, make_span, post_proto, rand_ids

MIB = 1024 * 1024


def heavy_json(target_bytes: int) -> bytes:
    head, tail = b'{"resourceSpans":[{"scopeSpans":[{"spans":[', b"]}]}]}"
    n = (target_bytes - len(head) - len(tail)) // 3
    return head + b",".join([b"{}"] * n) + tail


def test_d11_heavy_json_does_not_starve_admin(tailgates, receiver):
    """d11: two concurrent 15 MiB JSON bodies; /metrics < 2 s and a small protobuf export < 5 s meanwhile."""
    tg = tailgates(downstream=f"grpc://{receiver.endpoint}",
                   config=SHORT_TIMERS + "limits:\n  max_request_bytes: 16MiB\n")
    body = heavy_json(15 * MIB)
    results: list[str] = []

    def heavy():
        t0 = time.monotonic()
        try:
            r = requests.post(tg.traces_url, data=body, headers={"Content-Type": "application/json"}, timeout=30)
            results.append(f"HTTP {r.status_code} in {time.monotonic() - t0:.1f}s")
        except requests.exceptions.RequestException as error:
            results.append(f"{type(error).__name__} after {time.monotonic() - t0:.1f}s")

    workers = [threading.Thread(target=heavy, daemon=True) for _ in range(2)]
    for w in workers:
        w.start()
    time.sleep(0.3)  # both bodies uploaded (loopback) and being decoded
    probes = []
    rng = random.Random(11)
    finished = False
    try:
        deadline = time.monotonic() + 8  # a debug build spends ~30 s of CPU per body
        while True:
            heavy_running = any(w.is_alive() for w in workers)
            t0 = time.monotonic()
            try:
                requests.get(tg.metrics_url, timeout=2).raise_for_status()
                metrics_s = time.monotonic() - t0
            except requests.exceptions.RequestException as error:
                raise AssertionError(f"GET /metrics while heavy JSON was processed: {type(error).__name__} "
                                     f"after {time.monotonic() - t0:.1f}s (limit 2s); heavy: {results}") from error
            t0 = time.monotonic()
            trace_id, span_id = rand_ids(rng)
            try:
                r = post_proto(tg.traces_url, make_request([make_span(trace_id, span_id)]).SerializeToString(),
                               timeout=5)
                export_s = time.monotonic() - t0
            except requests.exceptions.RequestException as error:
                raise AssertionError(f"small export while heavy JSON was processed: {type(error).__name__} "
                                     f"after {time.monotonic() - t0:.1f}s (limit 5s); heavy: {results}") from error
            assert r.status_code == 200, f"small export: HTTP {r.status_code}"
            probes.append((heavy_running, round(metrics_s, 2), round(export_s, 2)))
            if not heavy_running or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        tg.assert_alive()
        finished = True
    finally:
        # Bounded: the heavy requests are not waited for (their outcome is not what this test checks);
        # tailgate is killed so that none of them can outlive the test.
        join_deadline = time.monotonic() + (2 if finished else 0.5)
        for w in workers:
            w.join(timeout=max(0.0, join_deadline - time.monotonic()))
        if any(w.is_alive() for w in workers):
            tg.kill()
            for w in workers:
                w.join(timeout=5)
    print(f"probes (heavy still running, /metrics s, export s): {probes}; heavy requests: {results}")
