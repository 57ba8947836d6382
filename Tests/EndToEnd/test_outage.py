"""Downstream outage: tailgate keeps deciding while the collector is down, retries the kept
batches, and delivers all of them, complete, once the collector comes up.

SDK -> tailgate -> (nothing listening on the downstream port) ... then a Receiver binds that port.
"""

from __future__ import annotations

import random
import re
import socket
import time

from conftest import CONFIG_YAML, TailgateProcess, free_ports, tailgate_binary
from receiver import Receiver
from test_e2e import (assert_clean_exit, assert_delivered, delivery_problems, generate, must_keep,
                      wait_for_delivery)
from agent import ERROR, HIGH_TOKENS, ORDINARY

N_TRACES = 300
SEED = 505
MAX_BACKOFF = "500ms"
DECIDE_TIMEOUT_S = 10.0
RETRY_GROWTH_TIMEOUT_S = 8.0
MIN_RETRY_GROWTH = 4  # retry rounds observed before the downstream comes up (~1-3 s of outage)
# The forwarder retries every <= 500 ms, but the gRPC channel under it has its own reconnect
# backoff (grpc-swift-nio-transport default: 1 s, x1.6, up to 120 s), so allow a few seconds.
RECOVERY_TIMEOUT_S = 15.0
DROP_REASONS = ("queue_full", "shutdown_timeout", "rejected_by_downstream")

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class OutageTailgate(TailgateProcess):
    """conftest's TailgateProcess with the shared config plus a short forwarder max_backoff."""

    def __init__(self, binary, workdir, downstream_port: int) -> None:
        super().__init__(binary, workdir, downstream_port)
        self.outage_config_path = workdir / "tailgate-outage.yaml"
        # CONFIG_YAML ends inside its `forwarder:` section.
        assert CONFIG_YAML.rstrip().splitlines()[-2] == "forwarder:", CONFIG_YAML
        self.outage_config_path.write_text(CONFIG_YAML + f"  max_backoff: {MAX_BACKOFF}\n")

    def command(self) -> list[str]:
        command = super().command()
        command[command.index("--config") + 1] = str(self.outage_config_path)
        return command

    def samples(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 if none)."""
        total = 0.0
        for line in self.metrics_text().splitlines():
            m = _SAMPLE.match(line)
            if m and m.group(1) == name:
                have = dict(_LABEL.findall(m.group(2) or ""))
                if all(have.get(k) == v for k, v in labels.items()):
                    total += float(m.group(3))
        return total


def downstream_port() -> int:
    """A free port below the kernel's ephemeral range, so that while nothing listens on it no
    outgoing connection (tailgate's own reconnects included) can be given it as its source port."""
    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    rng = random.Random()
    for _ in range(50 if low > 20_000 else 0):
        port = rng.randrange(20_000, low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    return free_ports(1)[0]


def wait_for(condition, timeout: float, poll: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def test_kept_traces_survive_downstream_outage(request, tmp_path):
    port = downstream_port()
    tg = OutageTailgate(tailgate_binary(), tmp_path, port)
    request.node._tailgates = getattr(request.node, "_tailgates", []) + [tg]  # logs on failure
    receiver = None
    try:
        tg.start()

        # 1. Traffic while the downstream is down: ingest must still accept everything.
        result = generate(tg, "grpc", n=N_TRACES, seed=SEED, gzip=True, rate=1000)
        counts = {c: sum(t.category == c for t in result.traces) for c in (ERROR, HIGH_TOKENS, ORDINARY)}
        kept = [t for t in result.traces if must_keep(t)]
        assert counts[ERROR] and counts[HIGH_TOKENS] and any(
            t.category == ORDINARY for t in kept), f"seed {SEED} covers too little: {counts}"

        decided = lambda: tg.samples("tailgate_traces_decided_total")  # noqa: E731
        assert wait_for(lambda: decided() >= len(result.traces), DECIDE_TIMEOUT_S), \
            f"only {decided()} of {len(result.traces)} traces decided within {DECIDE_TIMEOUT_S:.0f}s"
        assert tg.samples("tailgate_traces_decided_total", decision="keep") == len(kept)

        # 2. The forwarder keeps retrying (and gives up on nothing) while the downstream is down.
        retried = lambda: tg.samples("tailgate_forward_failures_total", retried="true")  # noqa: E731
        assert wait_for(lambda: retried() > 0, RETRY_GROWTH_TIMEOUT_S), \
            "tailgate_forward_failures_total{retried=\"true\"} stayed 0 with the downstream down"
        first = retried()
        assert wait_for(lambda: retried() >= first + MIN_RETRY_GROWTH, RETRY_GROWTH_TIMEOUT_S), \
            (f"tailgate_forward_failures_total{{retried=\"true\"}} went only from {first} to {retried()} "
             f"in {RETRY_GROWTH_TIMEOUT_S:.0f}s: the forwarder stopped retrying")
        assert tg.samples("tailgate_forward_failures_total", retried="false") == 0
        assert tg.samples("tailgate_spans_forwarded_total") == 0
        for reason in DROP_REASONS:
            assert tg.samples("tailgate_spans_dropped_total", reason=reason) == 0, reason
        assert tg.alive(), f"tailgate died during the outage (exit code {tg.proc.poll()})"

        # 3. The downstream comes up on the same port: every kept trace arrives, complete, once.
        retried_before = retried()
        outage_ended = time.monotonic()
        receiver = Receiver(port=port)
        assert receiver.start() == port
        if not wait_for_delivery(receiver, result.traces, timeout=RECOVERY_TIMEOUT_S):
            assert_delivered(receiver, result.traces,
                             f"kept traces not delivered within {RECOVERY_TIMEOUT_S:.0f}s of the downstream "
                             f"coming up (retried failures so far: {retried()})")
        recovery_s = time.monotonic() - outage_ended
        assert not delivery_problems(receiver, result.traces)
        print(f"outage: {retried_before:.0f} retried failures; {len(kept)} kept traces delivered "
              f"{recovery_s:.2f}s after the downstream came up")

        assert wait_for(lambda: tg.samples("tailgate_spans_forwarded_total") >= receiver.span_count(), 5)
        for reason in DROP_REASONS:
            assert tg.samples("tailgate_spans_dropped_total", reason=reason) == 0, reason

        # 4. Clean exit; nothing arrives late or twice.
        assert_clean_exit(tg)
        assert_delivered(receiver, result.traces, "after SIGTERM")
        log = tg.log_text()
        assert not re.search(r"giving up|rejected a batch", log), tg.log_tail()
    finally:
        if receiver is not None:
            receiver.stop()
        tg.kill()
