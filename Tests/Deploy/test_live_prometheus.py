"""A real Prometheus (Debian's binary, scrape and rule evaluation every second) scrapes a live `tailgate serve`
while the real OpenTelemetry Python SDK sends agent traffic over gRPC and HTTP: the end-to-end agent
(Tests/EndToEnd/agent.py) and GenAI agent runs (genai_traffic.py: chat, embeddings, execute_tool and
invoke_agent spans with provider, model, input/output/cache/reasoning tokens, failed LLM calls with error.type, a
failing tool, failed agent runs). One environment serves the whole module; then:

- every query of every dashboard panel, with Grafana's variables substituted, is run through Prometheus' HTTP API
  as the range query Grafana would send: it must succeed and return data (some finite value), except in panels
  marked "Expected zero or empty under normal traffic", whose values must all be zero (or absent) — the
  operational panels (ids 1-99) and the GenAI row (ids 100-199) in two tests;
- the live /metrics exposes the GenAI metrics the dashboard and rules name, with their types and labels;
- the dashboard's template variables find the job and the instance;
- the alert rules (deploy/prometheus/tailgate-alerts.yaml, with only the GenAI cost budget lowered to 0.001 USD/h)
  evaluate without error and none but the cost alert is pending or firing under normal traffic; the cost alert
  goes pending on the real spend (the SDK traffic costs far more than 0.001 USD/h);
- a rejected policies file makes TailgatePolicyReloadFailed fire for real;
- Tailgate stops cleanly and no export failed.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import yaml

from deploylib import (ALERTS, DASHBOARD, DEFAULT_POLICIES, EXPECTED_ZERO, GENAI_METRICS, GENAI_PANEL_IDS,
                       Prometheus, Tailgate, metric_names_used, tail)

RATE_INTERVAL = "10s"  # Grafana's $__rate_interval for a 1 s scrape interval over a short time range
WINDOW_S = 20          # the range queries cover the last 20 s, one point a second
COST_ALERT = "TailgateGenAICostSpike"
TEST_COST_BUDGET_USD_PER_HOUR = 0.001

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
    out = (expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__range", f"{WINDOW_S}s")
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


def rules_for_the_test(path: Path) -> None:
    """The shipped rules with the GenAI cost budget lowered, so that the cost alert's query is exercised on the
    real spend (and the test does not depend on how the SDK traffic's cost compares with the default budget)."""
    rules = yaml.safe_load(ALERTS.read_text())
    changed = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("record") == "tailgate:gen_ai_cost_budget_usd_per_hour":
                rule["expr"] = re.sub(r"\+ [0-9.]+$", f"+ {TEST_COST_BUDGET_USD_PER_HOUR}", rule["expr"].strip())
                changed += 1
    assert changed == 1
    path.write_text(yaml.safe_dump(rules, sort_keys=False, allow_unicode=True, width=1000))


@dataclass
class Live:
    tg: Tailgate
    prom: Prometheus
    policies: Path
    job: str = "tailgate"
    stop_agents: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    results: dict[str, object] = field(default_factory=dict)

    @property
    def instance(self) -> str:
        return self.tg.admin

    def stop_traffic(self) -> None:
        self.stop_agents.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def check_panels(self, wanted) -> tuple[list[str], int, set[int]]:
        """Runs every query of the panels `wanted(panel)` selects as Grafana's range query over the last
        WINDOW_S seconds: (failures, queries checked, ids of expected-zero panels)."""
        dashboard = json.loads(DASHBOARD.read_text())
        end = time.time()
        failures, checked, zero_panels = [], 0, set()
        for panel, target in panel_targets(dashboard):
            if not wanted(panel):
                continue
            expr = substitute(target["expr"], self.job, self.instance)
            body = self.prom.api("query_range", query=expr, start=end - WINDOW_S, end=end, step="1s")
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
        return failures, checked, zero_panels


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from agent import run_agent
    from genai_traffic import PRICES_YAML, run_genai_agent

    tmp_path = tmp_path_factory.mktemp("live")
    policies = tmp_path / "policies.yaml"
    policies.write_text(DEFAULT_POLICIES.read_text() + PRICES_YAML)
    tg_dir = tmp_path / "tailgate"
    tg_dir.mkdir()
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    rules = prom_dir / "tailgate-alerts.yaml"
    rules_for_the_test(rules)
    tg = Tailgate(tg_dir, TAILGATE_CONFIG, policies=policies)
    prom = Prometheus(prom_dir, PROMETHEUS_CONFIG.format(rules=rules, target="TARGET"))
    env = Live(tg, prom, policies)
    try:
        tg.start()
        prom.config.write_text(PROMETHEUS_CONFIG.format(rules=rules, target=tg.admin))
        prom.start()

        def agent(protocol: str, endpoint: str, traces: int, seed: int, rate: float) -> None:
            env.results[protocol] = run_agent(protocol, endpoint, traces, seed, rate=rate,
                                              stop_event=env.stop_agents, flush_timeout_s=20)

        def genai() -> None:  # runs until the module's last test stops it (at most 300 s)
            env.results["genai"] = run_genai_agent("grpc", f"127.0.0.1:{tg.grpc_port}", max_runs=3000, rate=10.0,
                                                   stop_event=env.stop_agents)

        env.threads = [
            threading.Thread(target=agent, args=("grpc", f"127.0.0.1:{tg.grpc_port}", 1200, 11, 40.0), daemon=True),
            threading.Thread(target=agent, args=("http", f"http://127.0.0.1:{tg.http_port}/v1/traces", 600, 12, 20.0),
                             daemon=True),
            threading.Thread(target=genai, daemon=True),
        ]
        for thread in env.threads:
            thread.start()

        # Traffic flows and has been scraped for longer than the rate window: every transport, decisions, forwards.
        def flowing():
            r = prom.api("query", query="sum by (transport) (tailgate_spans_received_total) > 0")["data"]["result"]
            d = prom.api("query", query="sum(increase(tailgate_spans_forwarded_total[10s])) > 0")["data"]["result"]
            return len(r) == 2 and bool(d)
        wait_for(flowing, 45, "spans received over both transports and forwarded")
        time.sleep(WINDOW_S / 2)
        yield env
    finally:
        env.stop_traffic()
        tg.stop()
        prom.stop()


def test_template_variables_find_the_live_target(live):
    # Template variables (label_values(...)) find this job and instance.
    jobs = live.prom.api("label/job/values", **{"match[]": "tailgate_spans_received_total"})["data"]
    instances = live.prom.api("label/instance/values",
                              **{"match[]": f'tailgate_spans_received_total{{job="{live.job}"}}'})["data"]
    assert live.job in jobs and live.instance in instances, (jobs, instances)


def test_operational_panels_return_data(live):
    failures, checked, zero_panels = live.check_panels(lambda p: p["id"] < GENAI_PANEL_IDS.start)
    assert not failures, "dashboard queries failing against live Tailgate:\n" + "\n".join(failures) + \
        "\n" + tail(live.tg.log)
    assert checked >= 30
    assert zero_panels, "no panel is marked as expected zero"


def test_genai_panels_return_data(live):
    """The GenAI row (exact pre-sampling metrics): every panel has data under the SDK's GenAI traffic."""
    failures, checked, zero_panels = live.check_panels(lambda p: p["id"] in GENAI_PANEL_IDS)
    assert checked >= 12
    assert not failures, "GenAI panel queries failing against live Tailgate:\n" + "\n".join(failures)
    assert zero_panels, "the label-overflow panel should be marked as expected zero"


def exposition(text: str) -> tuple[dict[str, str], dict[str, list[dict[str, str]]]]:
    """(family -> type, series name -> label sets) of a Prometheus text exposition."""
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind.strip()
        elif line and not line.startswith("#"):
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s", line)
            if m:
                labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
                samples.setdefault(m.group(1), []).append(labels)
    return types, samples


def test_live_tailgate_exposes_the_genai_metrics(live):
    """The GenAI metrics the dashboard and the rules name are on the real /metrics, with their type and labels
    (label_overflow only if something overflowed: under this traffic it must not)."""
    used = metric_names_used(DASHBOARD.read_text()) | metric_names_used(ALERTS.read_text())
    used = {re.sub(r"_(bucket|sum|count)$", "", u) if u.startswith("tailgate_gen_ai_operation") else u for u in used}
    assert {u for u in used if u.startswith("tailgate_gen_ai_")} == set(GENAI_METRICS)

    def scrape():
        types, samples = exposition(requests.get(f"http://{live.instance}/metrics", timeout=5).text)
        missing = [m for m in GENAI_METRICS if m != "tailgate_gen_ai_label_overflow_total"
                   and (m not in types and m.removesuffix("_total") not in types
                        or not samples.get(m + "_bucket" if GENAI_METRICS[m][0] == "histogram" else m))]
        return (types, samples) if not missing else None
    types, samples = wait_for(scrape, 20, "the GenAI metrics with samples on /metrics")

    problems = []
    for metric, (kind, labels) in GENAI_METRICS.items():
        family_type = types.get(metric) or types.get(metric.removesuffix("_total"))
        series = samples.get(metric + "_bucket" if kind == "histogram" else metric, [])
        if metric == "tailgate_gen_ai_label_overflow_total" and family_type is None:
            continue  # may have no series until something overflows; the expected-zero panel holds its values
        if family_type != kind:
            problems.append(f"{metric}: type {family_type}, expected {kind}")
        for label_set in series:
            missing = labels - set(label_set)
            if missing:
                problems.append(f"{metric}{label_set}: missing labels {sorted(missing)}")
                break
    assert not problems, "\n".join(problems)

    def label_values(metric: str, label: str) -> set[str]:
        return {s[label] for s in samples.get(metric, []) if label in s}
    assert label_values("tailgate_gen_ai_tokens_total", "type") == {"input", "output"}
    assert label_values("tailgate_gen_ai_token_details_total", "type") == {"cache_read", "cache_creation",
                                                                          "reasoning"}
    assert {"ok", "error"} <= label_values("tailgate_gen_ai_agent_runs_total", "outcome")
    assert {"chat", "embeddings"} <= label_values("tailgate_gen_ai_calls_total", "operation")
    assert {"rate_limited", "timeout", "500"} & label_values("tailgate_gen_ai_call_failures_total", "error_type")
    assert "sql_query" in label_values("tailgate_gen_ai_tool_call_failures_total", "tool")
    buckets = {s.get("le") for s in samples.get("tailgate_gen_ai_operation_duration_seconds_bucket", [])}
    for le in ("0.01", "0.02", "0.04", "0.08", "0.16", "0.32", "0.64", "1.28", "2.56", "5.12", "10.24", "20.48",
               "40.96", "81.92", "+Inf"):
        assert le in buckets, (le, sorted(buckets))


def test_alert_rules_evaluate_and_stay_quiet(live):
    # Alert rules: every rule evaluates without error, none pending or firing under normal traffic (but the
    # cost alert, whose budget this test lowered).
    groups = live.prom.api("rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) >= 15, [r["name"] for r in rules]
    unhealthy = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not unhealthy, unhealthy
    active = [(a["labels"]["alertname"], a["state"]) for a in live.prom.api("alerts")["data"]["alerts"]
              if a["labels"]["alertname"] != COST_ALERT]
    assert not active, f"alerts active under normal traffic: {active}"

    # The budget recording rules produce one series per instance (per job for the cost budget).
    budget = live.prom.api("query", query=f'tailgate:buffer_budget_bytes{{instance="{live.instance}"}}')
    budget = budget["data"]["result"]
    assert budget and float(budget[0]["value"][1]) == 512 * 1024 * 1024, budget
    cost_budget = live.prom.api("query", query="tailgate:gen_ai_cost_budget_usd_per_hour")["data"]["result"]
    assert [(s["metric"], float(s["value"][1])) for s in cost_budget] == \
        [({"__name__": "tailgate:gen_ai_cost_budget_usd_per_hour", "job": live.job}, TEST_COST_BUDGET_USD_PER_HOUR)]


def test_cost_alert_goes_pending_on_real_spend(live):
    def cost_alert():
        return [a for a in live.prom.api("alerts")["data"]["alerts"]
                if a["labels"]["alertname"] == COST_ALERT and a["state"] == "pending"]
    pending = wait_for(cost_alert, 30, f"{COST_ALERT} to go pending on spend above {TEST_COST_BUDGET_USD_PER_HOUR} USD/h")
    assert pending[0]["labels"] == {"alertname": COST_ALERT, "job": live.job, "severity": "warning"}
    assert float(pending[0]["value"]) > TEST_COST_BUDGET_USD_PER_HOUR


def test_rejected_policies_fire_the_reload_alert(live):
    # A rejected policies file: TailgatePolicyReloadFailed fires, the old policies stay.
    hash_before = live.prom.api("query", query="tailgate_policies_hash")["data"]["result"][0]["value"][1]
    live.policies.write_text("policies:\n  - name: broken\n    type: no_such_policy_type\n")

    def reload_alert():
        alerts = live.prom.api("alerts")["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "TailgatePolicyReloadFailed"
                and a["state"] == "firing"]
    fired = wait_for(reload_alert, 30, "TailgatePolicyReloadFailed to fire")
    assert fired[0]["labels"]["severity"] == "warning"
    assert fired[0]["labels"]["instance"] == live.instance
    hash_after = live.prom.api("query", query="tailgate_policies_hash")["data"]["result"][0]["value"][1]
    assert hash_after == hash_before


def test_clean_shutdown_and_no_failed_export(live):
    live.stop_traffic()
    code = live.tg.stop()
    assert code == 0, f"tailgate exited {code}\n{tail(live.tg.log)}"
    assert set(live.results) == {"grpc", "http", "genai"}, live.results
    for name, result in live.results.items():
        assert result.failed_exports == 0, (name, result)
