"""Fixtures for the fault suite: a factory of `tailgate serve` processes (each killed at teardown),
a recording gRPC receiver, the process logs attached to failure reports, and a hard per-test time
limit so a broken binary can never hang the suite.

Helpers live in faultlib.py (imported by the tests); this file only wires them into pytest.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "Tests" / "EndToEnd"))
sys.path.insert(0, str(HERE))

import faultlib  # noqa: E402

# Whole-test ceiling (seconds). Tests are designed to finish well below it; this only stops a hang.
HARD_LIMIT_S = float(os.environ.get("FAULT_TEST_LIMIT_S", "90"))


@pytest.fixture(autouse=True)
def _hard_time_limit(request):
    """SIGALRM after HARD_LIMIT_S: the test fails instead of hanging (teardown still kills processes)."""
    def expire(signum, frame):
        pytest.fail(f"{request.node.name} exceeded the fault suite's hard limit of {HARD_LIMIT_S:.0f}s",
                    pytrace=True)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, HARD_LIMIT_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def tailgates(request, tmp_path):
    """Factory: `tailgates(downstream=..., config=..., ...)` -> a started faultlib.Tailgate
    (`start=False` to start it yourself). Every process is SIGKILLed at teardown if still running."""
    made: list[faultlib.Tailgate] = []
    request.node._fault_tailgates = made

    def make(*, start: bool = True, **kwargs) -> faultlib.Tailgate:
        name = kwargs.pop("name", f"tailgate{len(made)}")
        tg = faultlib.Tailgate(tmp_path / name, name=name, **kwargs)
        made.append(tg)
        if start:
            tg.start()
        return tg

    yield make
    for tg in made:
        tg.kill()


@pytest.fixture
def receiver():
    rx = faultlib.Receiver()
    rx.start()
    yield rx
    rx.stop(grace=0.5)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        for tg in getattr(item, "_fault_tailgates", []):
            report.sections.append((f"{tg.log_path.name} ({report.when})", tg.log_tail(12000)))
    return report
