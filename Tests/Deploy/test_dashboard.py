"""The Grafana dashboard: parses, modern schema, the datasource/job/instance variables, unique panel ids, every
query on the ${datasource} variable and filtered by $job and $instance, no overlapping panels. (Its queries are run
against a live Tailgate in test_live_prometheus.py.)"""

from __future__ import annotations

import json
import re

from deploylib import DASHBOARD, EXPECTED_ZERO


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


def test_panel_ids_are_unique():
    ids = [p["id"] for p in all_panels(load())]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert all(isinstance(i, int) and 0 < i < 100 for i in ids), "ids 100-199 are reserved for the GenAI row"


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
            if "rate(" in expr or "increase(" in expr:
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
