"""Alert rules: promtool accepts them and their unit tests pass; every alert is complete (severity, summary,
description, runbook) and has a unit test where it fires and one where it stays quiet; every metric they (and the
dashboard) name is one Tailgate exports: the operational metrics defined in TailgateMetrics.swift, and the GenAI
metrics of the contract in deploylib.GENAI_METRICS (which the live test checks against the real binary)."""

from __future__ import annotations

import json
import re
import subprocess

import yaml

from deploylib import (ALERTS, ALERTS_TEST, DASHBOARD, GENAI_METRICS, METRICS_SOURCE, genai_series_names,
                       metric_names_used, promtool)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, cwd=ALERTS.parent)


def alerting_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules():
    result = run(promtool(), "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules():
    result = run(promtool(), "test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_complete():
    rules = alerting_rules()
    expected = {"TailgateSpansLost", "TailgateDownstreamFailing", "TailgateForwardQueueNearFull",
                "TailgateBufferNearBudget", "TailgateDecisionsForcedEarly", "TailgatePolicyReloadFailed",
                "TailgateIngestRefusalsSpiking", "TailgateDown", "TailgateGenAICostSpike",
                "TailgateGenAIErrorRateHigh", "TailgateGenAILabelOverflow"}
    assert expected <= {r["alert"] for r in rules}
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        for key in ("summary", "description", "runbook"):
            assert len(rule["annotations"].get(key, "")) > 20, (rule["alert"], key)


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    firing, quiet = set(), set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in alerting_rules()}
    assert names - firing == set(), f"alerts never tested firing: {names - firing}"
    assert names - quiet == set(), f"alerts never tested quiet: {names - quiet}"


def exported_metrics() -> set[str]:
    names = set(re.findall(r'"(tailgate_[a-z_]+)"', METRICS_SOURCE.read_text()))
    histograms = {n for n in names if n.endswith("_seconds")}
    return names | {f"{h}_{s}" for h in histograms for s in ("bucket", "sum", "count")}


def test_rules_and_dashboard_name_only_exported_metrics():
    exported = exported_metrics() | genai_series_names()
    assert "tailgate_spans_dropped_total" in exported and "tailgate_decision_latency_seconds_bucket" in exported
    assert "tailgate_gen_ai_operation_duration_seconds_bucket" in exported
    for path in (ALERTS, DASHBOARD):
        # tailgate_* metric names (recording rules are named tailgate:*, which the pattern leaves out)
        used = metric_names_used(path.read_text())
        unknown = {u for u in used if u not in exported}
        assert not unknown, f"{path.name} names metrics Tailgate does not export: {sorted(unknown)}"


def test_genai_queries_use_only_the_contract_labels():
    """Every `by (...)` / `on (...)` label of a query over one GenAI metric is one of its labels (or job, instance,
    le for histogram buckets), so that a typo in a label does not silently return one empty series."""
    texts = [r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    texts += [t["expr"] for top in dashboard["panels"] for p in [top] + top.get("panels", [])
              for t in p.get("targets", [])]
    checked = 0
    for expr in texts:
        metrics = {m for m in metric_names_used(expr) if m.startswith("tailgate_gen_ai_")}
        if not metrics:
            continue
        allowed = {"job", "instance"}
        for metric in metrics:
            base = re.sub(r"_(bucket|sum|count)$", "", metric) if metric not in GENAI_METRICS else metric
            assert base in GENAI_METRICS, metric
            allowed |= GENAI_METRICS[base][1] | ({"le"} if metric.endswith("_bucket") else set())
        for group in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
            labels = {label.strip() for label in group.split(",") if label.strip()}
            assert labels <= allowed, (expr, labels - allowed)
            checked += 1
    assert checked >= 15


def test_recording_rules_feed_the_alerts_and_dashboard():
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    records = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    assert records == {"tailgate:buffer_budget_bytes", "tailgate:forward_queue_budget_bytes",
                       "tailgate:gen_ai_cost_budget_usd_per_hour"}
    dashboard = DASHBOARD.read_text()
    for record in ("tailgate:buffer_budget_bytes", "tailgate:forward_queue_budget_bytes"):
        assert record in dashboard
    # The cost budget is per job (the fleet), not per instance: only the cost alert reads it.
    (cost,) = [r for r in alerting_rules() if r["alert"] == "TailgateGenAICostSpike"]
    assert "tailgate:gen_ai_cost_budget_usd_per_hour" in cost["expr"]
