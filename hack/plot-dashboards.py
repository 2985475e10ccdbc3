#!/usr/bin/env python3
"""Draws the chart's Grafana dashboards (charts/textgen-operator/files/dashboards/*.json) from a Prometheus: every
panel's queries, with the template variables filled in as Grafana fills them, run as range queries and plotted on
the dashboard's own grid (e2e/dashboard_plot.py). The pictures in operator/docs/dashboards.md are made this way
from the e2e run's data (e2e/test_dashboards.py; TEXTGEN_E2E_DASHBOARD_PLOTS=<folder> makes the test call the
same code at its end).

Usage, against the local cluster's Prometheus (`hack/cluster metrics up`; its data is kept 2 h, so a finished
e2e run can still be drawn: the test prints its namespace and time window):
  .venv/bin/python hack/plot-dashboards.py --namespace NS --service TGS --start UNIX --end UNIX \
      [--job textgen-operator] [--step 2] [--rate-interval 30s] [--out-dir operator/docs]
Panels that drew no data are listed and make the exit status 1.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2e.dashboard_plot import plot_dashboard  # noqa: E402
from e2e.dashboards import RATE_INTERVAL, load_dashboards  # noqa: E402
from e2e.metrics_pipeline import prometheus_port  # noqa: E402


def range_query(base_url: str) -> Any:
    def query(expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
        with urllib.request.urlopen(f"{base_url}/api/v1/query_range?{params}", timeout=30) as answer:
            body = json.load(answer)
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus refused {expr!r}: {body}")
        return list(body["data"]["result"])
    return query


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", default=f"http://127.0.0.1:{prometheus_port()}",
                        help="Prometheus base URL (default: the local cluster's, from TEXTGEN_CLUSTER_* settings)")
    parser.add_argument("--namespace", required=True, help="$namespace: the TGS's namespace")
    parser.add_argument("--service", required=True, help="$service: the TGS's name")
    parser.add_argument("--job", default="textgen-operator", help="$job: the operator's scrape job")
    parser.add_argument("--start", type=float, help="window start, unix seconds (default: --end - 10 min)")
    parser.add_argument("--end", type=float, help="window end, unix seconds (default: now)")
    parser.add_argument("--step", type=float, default=2.0, help="range query step in seconds (default 2)")
    parser.add_argument("--rate-interval", default=RATE_INTERVAL, help=f"$__rate_interval (default {RATE_INTERVAL})")
    parser.add_argument("--out-dir", type=Path, default=Path("operator/docs"), help="where the PNGs go")
    args = parser.parse_args(argv)
    end = args.end if args.end is not None else time.time()
    start = args.start if args.start is not None else end - 600
    if not start < end:
        parser.error(f"--start {start} must be before --end {end}")
    variables = {"namespace": args.namespace, "service": args.service, "job": args.job}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    empty = []
    for name, dashboard in load_dashboards().items():
        out = args.out_dir / f"dashboard-{name.removeprefix('textgen-')}.png"
        empty += [f"{name}: {title}" for title in plot_dashboard(
            dashboard, variables, start, end, args.step, range_query(args.prometheus.rstrip("/")), out,
            args.rate_interval)]
        print(out)
    for panel in empty:
        print(f"no data: {panel}", file=sys.stderr)
    return 1 if empty else 0


if __name__ == "__main__":
    sys.exit(main())
