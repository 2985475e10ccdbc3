"""The chart's Grafana dashboards (charts/textgen-operator/files/dashboards/*.json) as PromQL, for the e2e test
that runs every panel query against the real Prometheus and for hack/plot-dashboards.py, which draws the panels.

Grafana fills in the template variables and `$__rate_interval` before it sends a query; `render` does the same
with values given here, so what Prometheus evaluates is what Grafana would send.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e.harness import REPO_ROOT

DASHBOARDS_DIR = REPO_ROOT / "charts" / "textgen-operator" / "files" / "dashboards"
# Grafana's $__rate_interval is max(4 x scrape interval, step + scrape interval); 30 s covers the local
# pipeline's 2 s scrapes with room for a missed one.
RATE_INTERVAL = "30s"


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str      # file stem, e.g. textgen-tgs
    panel: str          # panel title
    ref_id: str
    expr: str           # as written in the dashboard, variables not filled in
    legend: str


def load_dashboards(folder: Path = DASHBOARDS_DIR) -> dict[str, dict[str, Any]]:
    """{file stem: dashboard JSON} of every dashboard the chart ships."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The dashboard's panels, those inside rows included (rows themselves have no queries)."""
    out: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        out.extend(panel.get("panels", []) if panel.get("type") == "row" else [panel])
    return out


def panel_queries(name: str, dashboard: dict[str, Any]) -> list[PanelQuery]:
    return [PanelQuery(name, panel["title"], target["refId"], target["expr"], target.get("legendFormat", ""))
            for panel in panels(dashboard) for target in panel.get("targets", [])]


def template_variables(dashboard: dict[str, Any]) -> list[str]:
    return [variable["name"] for variable in dashboard.get("templating", {}).get("list", [])]


def render(expr: str, variables: dict[str, str], rate_interval: str = RATE_INTERVAL) -> str:
    """The query Grafana sends: `$__rate_interval` and `$name` / `${name}` replaced (KeyError on a variable
    that is not given, so a query never reaches Prometheus with a `$` left in it)."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("${__rate_interval}", rate_interval)
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables[m.group(1) or m.group(2)], expr)


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's legendFormat: `{{label}}` replaced by the series' label value."""
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)
    return text or "{" + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    """The finite sample values of an instant query's result (NaN, e.g. a quantile over no observations, is
    what Grafana draws as nothing)."""
    values = [float(series["value"][1]) for series in result]
    return [v for v in values if math.isfinite(v)]


def prometheus_range(expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    """A range query against the local pipeline's Prometheus: [{"metric": {...}, "values": [[ts, "v"], ...]}]."""
    from e2e.metrics_pipeline import prometheus_get
    data = prometheus_get("/api/v1/query_range", query=expr, start=str(start), end=str(end), step=str(step))
    return list(data["result"])


def variable_queries(dashboard: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """{variable: (series selector, label)} of the dashboard's `label_values(selector, label)` variables."""
    out: dict[str, tuple[str, str]] = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"].strip())
        if match is None:
            raise ValueError(f"variable {variable['name']}: {variable['definition']!r} is not label_values(...)")
        out[variable["name"]] = (match.group(1), match.group(2))
    return out
