"""GET /metrics in OpenMetrics when asked (Accept: application/openmetrics-text), Prometheus text otherwise.

The Prometheus text is checked by promtool (the Debian prometheus package); the OpenMetrics answer by the reference
Python parser (prometheus_client.openmetrics.parser), and both must hold the same samples.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

from agent import run_agent

# What Prometheus sends when it scrapes.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def scrape(tailgate, accept: str | None) -> requests.Response:
    headers = {"Accept": accept} if accept is not None else {}
    response = requests.get(tailgate.metrics_url, headers=headers, timeout=10)
    assert response.status_code == 200, response.text[:500]
    return response


def samples(families) -> dict[tuple, float]:
    out = {}
    for family in families:
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"sample {key} twice"
            out[key] = s.value
    return out


@pytest.fixture
def busy_tailgate(tailgate):
    """A tailgate that has decided a workload of agent traces (GenAI tokens, errors, several policies)."""
    result = run_agent("grpc", tailgate.grpc_endpoint, n_traces=20, seed=3)
    assert result.ok
    deadline = time.monotonic() + 60
    while (tailgate.counter("tailgate_traces_buffered") or 0) > 0 or not tailgate.counter("tailgate_traces_decided_total"):
        assert time.monotonic() < deadline, "traces still buffered"
        time.sleep(0.2)
    return tailgate


def test_openmetrics_when_asked_with_the_same_samples_as_the_text(busy_tailgate):
    tg = busy_tailgate
    before = scrape(tg, None)
    om = scrape(tg, PROMETHEUS_ACCEPT)
    after = scrape(tg, "text/plain")
    assert om.headers["content-type"] == OPENMETRICS_TYPE
    assert before.headers["content-type"] == after.headers["content-type"] == PROMETHEUS_TYPE
    assert "accept" in om.headers.get("vary", "").lower()
    assert om.text.endswith("\n# EOF\n") and om.text.count("# EOF") == 1
    assert "# EOF" not in before.text

    families = list(parse_openmetrics(om.text))  # raises on anything that is not valid OpenMetrics
    om_samples = samples(families)
    text_samples = samples(parse_prometheus(before.text))
    assert om_samples.keys() == text_samples.keys()
    later = samples(parse_prometheus(after.text))
    for key, value in om_samples.items():
        if key[0].startswith("process_"):  # CPU and memory move between scrapes
            continue
        assert value == text_samples[key] == later[key], key
    names = {key[0] for key in om_samples}
    assert {"tailgate_spans_received_total", "tailgate_gen_ai_tokens_total", "tailgate_build_info"} <= names, names

    # Counters: the family without _total, its samples with it; info metrics as info; histograms intact.
    by_name = {f.name: f for f in families}
    received = by_name["tailgate_spans_received"]
    assert received.type == "counter" and all(s.name == "tailgate_spans_received_total" for s in received.samples)
    assert not any(f.type == "counter" and f.name.endswith("_total") for f in families)
    assert by_name["tailgate_build"].type == "info"
    latency = by_name["tailgate_decision_latency_seconds"]
    assert latency.type == "histogram" and any(s.labels.get("le") == "+Inf" for s in latency.samples)
    assert sum(v for (n, _), v in om_samples.items() if n == "tailgate_traces_decided_total") == 20


@pytest.mark.parametrize("accept", [None, "*/*", "text/plain;version=0.0.4", "application/openmetrics-text;q=0",
                                    "text/plain;q=1,application/openmetrics-text;q=0.5", "application/json"])
def test_plain_requests_keep_getting_prometheus_text(tailgate, accept):
    response = scrape(tailgate, accept)
    assert response.headers["content-type"] == PROMETHEUS_TYPE, accept
    assert "# EOF" not in response.text and "# TYPE tailgate_spans_received_total counter" in response.text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (apt-get install prometheus)")
def test_promtool_reads_the_prometheus_text(busy_tailgate):
    text = scrape(busy_tailgate, None).text
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
    # Exit 3: lint findings only (this promtool cannot turn linting off; some metrics have no HELP text); exit 1 and
    # "error while linting": the text does not parse.
    assert check.returncode in (0, 3) and "error while linting" not in check.stdout + check.stderr, check.stdout + check.stderr
    findings = [line for line in (check.stdout + check.stderr).splitlines() if line.strip()]
    assert all(line.endswith("no help text") for line in findings), findings
