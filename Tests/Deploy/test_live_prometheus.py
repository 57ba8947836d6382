"""A real Prometheus (Debian's binary, scrape and rule evaluation every second) scrapes a live `tailgate serve`
while the real OpenTelemetry Python SDK sends agent traffic over gRPC and HTTP. Then:

- every query of every dashboard panel, with Grafana's variables substituted, is run through Prometheus' HTTP API
  as the range query Grafana would send: it must succeed and return data (some finite value), except in panels marked "Expected zero
  or empty under normal traffic", whose values must all be zero (or absent);
- the dashboard's template variables find the job and the instance;
- the alert rules (loaded from deploy/prometheus/tailgate-alerts.yaml) evaluate without error and none is pending
  or firing under normal traffic;
- a rejected policies file makes TailgatePolicyReloadFailed fire for real.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time

import pytest

from deploylib import (ALERTS, DASHBOARD, DEFAULT_POLICIES, EXPECTED_ZERO, Prometheus, Tailgate, tail)

RATE_INTERVAL = "10s"  # Grafana's $__rate_interval for a 1 s scrape interval over a short time range
WINDOW_S = 20          # the range queries cover the last 20 s, one point a second

TAILGATE_CONFIG = """\
policies_reload_interval: 500ms
buffer:
  wait_after_root: 300ms
  idle_timeout: 1s
  remote_parent_timeout: 2s
  max_trace_age: 30s
forwarder:
  batch_timeout: 100ms
"""

PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: tailgate
    static_configs:
      - targets: ["{target}"]
"""


def panel_targets(dashboard: dict):
    """(panel, target) for every query of every panel, rows' nested panels included."""
    for panel in dashboard["panels"]:
        for inner in [panel] + panel.get("panels", []):
            for target in inner.get("targets", []):
                yield inner, target


def grafana_regex(value: str) -> str:
    """A variable value as Grafana's Prometheus data source puts it into a =~ matcher: regex-escaped, with the
    backslashes doubled for the PromQL string literal."""
    return re.escape(value).replace("\\", "\\\\")


def substitute(expr: str, job: str, instance: str) -> str:
    out = (expr.replace("$__rate_interval", RATE_INTERVAL)
           .replace("$job", grafana_regex(job)).replace("$instance", grafana_regex(instance)))
    assert "$" not in out, f"unsubstituted variable in {out}"
    return out


def values(result: list) -> list[float]:
    return [float(v) for series in result for _, v in series["values"]]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last})", pytrace=False)


def test_dashboard_and_alerts_against_live_tailgate(tmp_path):
    from agent import run_agent

    policies = tmp_path / "policies.yaml"
    policies.write_text(DEFAULT_POLICIES.read_text())
    tg_dir = tmp_path / "tailgate"
    tg_dir.mkdir()
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    tg = Tailgate(tg_dir, TAILGATE_CONFIG, policies=policies)
    prom = Prometheus(prom_dir, PROMETHEUS_CONFIG.format(rules=ALERTS, target="TARGET"))
    agents: list[threading.Thread] = []
    stop_agents = threading.Event()
    results: dict[str, object] = {}
    try:
        tg.start()
        prom.config.write_text(PROMETHEUS_CONFIG.format(rules=ALERTS, target=tg.admin))
        prom.start()

        def agent(protocol: str, endpoint: str, traces: int, seed: int, rate: float) -> None:
            results[protocol] = run_agent(protocol, endpoint, traces, seed, rate=rate, stop_event=stop_agents,
                                          flush_timeout_s=20)

        agents = [
            threading.Thread(target=agent, args=("grpc", f"127.0.0.1:{tg.grpc_port}", 1200, 11, 40.0), daemon=True),
            threading.Thread(target=agent, args=("http", f"http://127.0.0.1:{tg.http_port}/v1/traces", 600, 12, 20.0),
                             daemon=True),
        ]
        for thread in agents:
            thread.start()

        # Traffic flows and has been scraped for longer than the rate window: every transport, decisions, forwards.
        def flowing():
            r = prom.api("query", query="sum by (transport) (tailgate_spans_received_total) > 0")["data"]["result"]
            d = prom.api("query", query="sum(increase(tailgate_spans_forwarded_total[10s])) > 0")["data"]["result"]
            return len(r) == 2 and bool(d)
        wait_for(flowing, 45, "spans received over both transports and forwarded")
        time.sleep(WINDOW_S / 2)

        dashboard = json.loads(DASHBOARD.read_text())
        job, instance = "tailgate", tg.admin

        # Template variables (label_values(...)) find this job and instance.
        jobs = prom.api("label/job/values", **{"match[]": "tailgate_spans_received_total"})["data"]
        instances = prom.api("label/instance/values", **{"match[]": f'tailgate_spans_received_total{{job="{job}"}}'})["data"]
        assert job in jobs and instance in instances, (jobs, instances)

        end = time.time()
        failures, checked, zero_panels = [], 0, set()
        for panel, target in panel_targets(dashboard):
            expr = substitute(target["expr"], job, instance)
            body = prom.api("query_range", query=expr, start=end - WINDOW_S, end=end, step="1s")
            checked += 1
            label = f'panel {panel["id"]} "{panel["title"]}" {target["refId"]}: {expr}'
            if body.get("status") != "success":
                failures.append(f"{label}\n    -> {body.get('errorType')}: {body.get('error')}")
                continue
            result = body["data"]["result"]
            if EXPECTED_ZERO in panel.get("description", ""):
                zero_panels.add(panel["id"])
                nonzero = [v for v in values(result) if not math.isnan(v) and v != 0]
                if nonzero:
                    failures.append(f"{label}\n    -> expected zero under normal traffic, got {nonzero[:5]}")
            elif not result:
                failures.append(f"{label}\n    -> no data")
            elif not any(math.isfinite(v) for v in values(result)):
                failures.append(f"{label}\n    -> only NaN/Inf values")
        assert not failures, "dashboard queries failing against live Tailgate:\n" + "\n".join(failures) + \
            "\n" + tail(tg.log)
        assert checked >= 30
        assert zero_panels, "no panel is marked as expected zero"

        # Alert rules: every rule evaluates without error, none pending or firing under normal traffic.
        groups = prom.api("rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) >= 11, [r["name"] for r in rules]
        unhealthy = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
        assert not unhealthy, unhealthy
        active = [(a["labels"]["alertname"], a["state"]) for a in prom.api("alerts")["data"]["alerts"]]
        assert not active, f"alerts active under normal traffic: {active}"

        # The budget recording rules produce one series per instance.
        budget = prom.api("query", query=f'tailgate:buffer_budget_bytes{{instance="{instance}"}}')["data"]["result"]
        assert budget and float(budget[0]["value"][1]) == 512 * 1024 * 1024, budget

        # A rejected policies file: TailgatePolicyReloadFailed fires, the old policies stay.
        hash_before = prom.api("query", query="tailgate_policies_hash")["data"]["result"][0]["value"][1]
        policies.write_text("policies:\n  - name: broken\n    type: no_such_policy_type\n")

        def reload_alert():
            alerts = prom.api("alerts")["data"]["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == "TailgatePolicyReloadFailed"
                    and a["state"] == "firing"]
        fired = wait_for(reload_alert, 30, "TailgatePolicyReloadFailed to fire")
        assert fired[0]["labels"]["severity"] == "warning"
        assert fired[0]["labels"]["instance"] == instance
        hash_after = prom.api("query", query="tailgate_policies_hash")["data"]["result"][0]["value"][1]
        assert hash_after == hash_before
    finally:
        stop_agents.set()
        for thread in agents:
            thread.join(timeout=60)
        code = tg.stop()
        prom.stop()
    assert code == 0, f"tailgate exited {code}\n{tail(tg.log)}"
    for protocol, result in results.items():
        assert result.failed_exports == 0, (protocol, result)
