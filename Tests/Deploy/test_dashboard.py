"""The Grafana dashboard: parses, modern schema, the datasource/job/instance variables, unique panel ids (1-99
operational, 100-199 the GenAI row), every query on the ${datasource} variable and filtered by $job and $instance,
no overlapping panels, the GenAI row's panels and descriptions. (Its queries are run against a live Tailgate in
test_live_prometheus.py.)"""

from __future__ import annotations

import json
import re

from deploylib import DASHBOARD, EXPECTED_ZERO, GENAI_METRICS, GENAI_PANEL_IDS, GENAI_ROW_TITLE


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(dashboard: dict) -> list[dict]:
    return [p for top in dashboard["panels"] for p in [top] + top.get("panels", [])]


def test_parses_with_modern_schema_and_variables():
    dashboard = load()
    assert dashboard["schemaVersion"] >= 38
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
        assert "label_values(tailgate_" in variables[name]["definition"]
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"


def uses_genai_metrics(panel: dict) -> bool:
    return any("tailgate_gen_ai_" in t["expr"] for t in panel.get("targets", []))


def genai_row_panels(dashboard: dict) -> list[dict]:
    """The GenAI row and the panels below it (the row is the last one; rows are not collapsed)."""
    (row,) = [p for p in dashboard["panels"] if p["type"] == "row" and p["title"] == GENAI_ROW_TITLE]
    assert not row.get("collapsed") and not row.get("panels")
    return [p for p in dashboard["panels"] if p["gridPos"]["y"] >= row["gridPos"]["y"]]


def test_panel_ids_are_unique():
    ids = [p["id"] for p in all_panels(load())]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert all(isinstance(i, int) and 0 < i < 200 for i in ids), ids


def test_genai_panel_ids_are_in_100_to_199_and_only_there():
    dashboard = load()
    genai = genai_row_panels(dashboard)
    genai_ids = {p["id"] for p in genai}
    assert len(genai) >= 10
    for panel in all_panels(dashboard):
        in_genai_row = panel["id"] in genai_ids
        assert (panel["id"] in GENAI_PANEL_IDS) == in_genai_row, (panel["id"], panel["title"])
        if panel["type"] != "row":
            # GenAI metrics only in the GenAI row, and every panel of that row on GenAI metrics
            assert uses_genai_metrics(panel) == in_genai_row, (panel["id"], panel["title"])


def test_every_query_uses_the_variables():
    for panel in all_panels(load()):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            expr = target["expr"]
            selectors = re.findall(r"(?:tailgate[_:][a-z_:]+|\bup)\{([^}]*)\}", expr)
            assert selectors, (panel["title"], expr)
            for selector in selectors:
                assert 'job=~"$job"' in selector and 'instance=~"$instance"' in selector, (panel["title"], expr)
            if "[$__range]" in expr:
                # a total over the dashboard's time range: a stat showing one instant value
                assert panel["type"] == "stat" and target["instant"] and not target["range"], panel["title"]
            elif "rate(" in expr or "increase(" in expr:
                assert "[$__rate_interval]" in expr, (panel["title"], expr)


def test_panels_do_not_overlap_and_fit_the_grid():
    cells = {}
    for panel in load()["panels"]:
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f'{panel["title"]} overlaps {cells[(x, y)]}'
                cells[(x, y)] = panel["title"]


def test_the_operator_sections_are_there():
    titles = " | ".join(p["title"] for p in all_panels(load()))
    for needle in ("Spans received/s by transport", "Keep rate per policy", "Buffered bytes", "Buffered traces",
                   "Forward queue bytes", "Decision triggers", "Incomplete decisions", "Decision latency",
                   "Spans lost by reason", "Forward failures by reason", "Forwarded to the downstream",
                   "Requests refused/s by reason", "Policy reloads"):
        assert needle in titles, needle
    zero = [p["title"] for p in all_panels(load()) if EXPECTED_ZERO in p.get("description", "")]
    assert "Spans lost by reason (should be flat zero)" in zero and "Forward failures by reason" in zero


def test_the_genai_row_has_its_panels_and_says_what_it_counts():
    genai = genai_row_panels(load())
    titles = " | ".join(p["title"] for p in genai)
    for needle in ("Tokens/s by type and model", "Cache and reasoning tokens/s", "Cost USD/h by model",
                   "Cost over the dashboard range", "LLM calls/s", "LLM call failure ratio by model",
                   "failures/s by error_type", "p50 / p95", "Agent runs/s by outcome", "Tool calls/s by tool",
                   "Tool failure ratio by tool", "folded into other"):
        assert needle in titles, needle
    exprs = " ".join(t["expr"] for p in genai for t in p.get("targets", []))
    for metric in GENAI_METRICS:
        assert metric in exprs, f"no GenAI panel shows {metric}"
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.95," in exprs
    for panel in genai:
        if panel["type"] == "row":
            continue
        description = panel.get("description", "")
        if "overflow" in " ".join(t["expr"] for t in panel["targets"]):
            assert EXPECTED_ZERO in description, panel["title"]
        else:
            assert "all traffic" in description and "not over the sampled traces" in description, panel["title"]
