"""Alert rules: promtool accepts them and their unit tests pass; every alert is complete (severity, summary,
description, runbook) and has a unit test where it fires and one where it stays quiet; every metric they name is
one Tailgate exports."""

from __future__ import annotations

import re
import subprocess

import yaml

from deploylib import ALERTS, ALERTS_TEST, DASHBOARD, METRICS_SOURCE, promtool


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
                "TailgateIngestRefusalsSpiking", "TailgateDown"}
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
    exported = exported_metrics()
    assert "tailgate_spans_dropped_total" in exported and "tailgate_decision_latency_seconds_bucket" in exported
    for path in (ALERTS, DASHBOARD):
        # tailgate_* metric names (recording rules are named tailgate:*, which the pattern leaves out)
        used = set(re.findall(r"\b(tailgate_[a-z_]+)\b(?![:])", path.read_text()))
        unknown = {u for u in used if u not in exported}
        assert not unknown, f"{path.name} names metrics Tailgate does not export: {sorted(unknown)}"


def test_recording_rules_feed_the_alerts_and_dashboard():
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    records = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    assert records == {"tailgate:buffer_budget_bytes", "tailgate:forward_queue_budget_bytes"}
    dashboard = DASHBOARD.read_text()
    for record in records:
        assert record in dashboard
