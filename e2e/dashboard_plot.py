"""Draws a Grafana dashboard's panels from Prometheus range queries (matplotlib), laid out on the dashboard's own
24-column grid: the picture of what the dashboard shows, for the docs (hack/plot-dashboards.py, and the e2e
test when TEXTGEN_E2E_DASHBOARD_PLOTS names a folder)."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2e.dashboards import RATE_INTERVAL, legend, panels, render, template_variables

# (start, end, step) -> [{"metric": {labels}, "values": [[ts, "v"], ...]}, ...]
RangeQuery = Callable[[str, float, float, float], list[dict[str, Any]]]
# Grafana unit -> (axis label, factor applied to the values)
UNITS: dict[str, tuple[str, float]] = {"s": ("seconds", 1.0), "percentunit": ("%", 100.0), "reqps": ("req/s", 1.0),
                                       "ops": ("ops/s", 1.0), "short": ("", 1.0)}


def unit_label(unit: str) -> tuple[str, float]:
    if unit.startswith("suffix:"):
        return unit.split(":", 1)[1].strip(), 1.0
    return UNITS.get(unit, (unit, 1.0))


def draw_panel(ax: Any, panel: dict[str, Any], series: list[tuple[str, list[float], list[float]]]) -> None:
    label, _ = unit_label(panel["fieldConfig"]["defaults"].get("unit", "short"))
    for name, times, values in series:
        ax.plot(times, values, label=name, linewidth=1.2)
    ax.set_title(panel["title"], fontsize=10, loc="left")
    ax.set_ylabel(label, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if not series:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="red")
    elif len(series) <= 8:
        ax.legend(fontsize=7, loc="upper left")


def panel_series(panel: dict[str, Any], variables: dict[str, str], start: float, end: float, step: float,
                 query_range: RangeQuery, rate_interval: str = RATE_INTERVAL
                 ) -> list[tuple[str, list[float], list[float]]]:
    """(legend, seconds since start, values) of every series of every target, NaN points left out."""
    _, factor = unit_label(panel["fieldConfig"]["defaults"].get("unit", "short"))
    out = []
    for target in panel.get("targets", []):
        for series in query_range(render(target["expr"], variables, rate_interval), start, end, step):
            points = [(float(t) - start, float(v) * factor) for t, v in series["values"] if math.isfinite(float(v))]
            if points:
                out.append((legend(target.get("legendFormat", ""), series["metric"]),
                            [p[0] for p in points], [p[1] for p in points]))
    return out


def plot_dashboard(dashboard: dict[str, Any], variables: dict[str, str], start: float, end: float, step: float,
                   query_range: RangeQuery, out: Path, rate_interval: str = RATE_INTERVAL) -> list[str]:
    """Writes the PNG `out`; returns the titles of the panels that drew no data (each one is a bug)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    items = panels(dashboard)
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in items)
    fig = plt.figure(figsize=(16, rows * 0.42))
    grid = GridSpec(rows, 24, figure=fig, hspace=1.6, wspace=1.2, top=1 - 2.5 / rows, bottom=0.02)
    empty = []
    for panel in items:
        pos = panel["gridPos"]
        ax = fig.add_subplot(grid[pos["y"]:pos["y"] + pos["h"] - 1, pos["x"]:pos["x"] + pos["w"] - 1])
        series = panel_series(panel, variables, start, end, step, query_range, rate_interval)
        draw_panel(ax, panel, series)
        empty += [] if series else [panel["title"]]
    shown = ", ".join(f"{k}={v}" for k, v in variables.items() if k in template_variables(dashboard))
    began = time.strftime("%H:%M:%S UTC", time.gmtime(start))
    fig.suptitle(f"{dashboard['title']}  ({shown}); x: seconds from {began}", fontsize=12)
    fig.savefig(out, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return empty
