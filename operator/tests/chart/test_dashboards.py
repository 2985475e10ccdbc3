"""The chart's Grafana dashboards (files/dashboards/*.json), checked without a cluster: well-formed for Grafana
(datasource as a template variable, units, unique ids), every variable a query uses is defined, and every panel
query parsed by a real, empty Prometheus (its /api/v1/parse_query; from hack/build-tools.sh's metrics tools,
skipped when they are not built), whose syntax tree then shows which series each query selects: only metrics
that server/docs/metrics.md or operator/docs/metrics.md document, each selected by the dashboard's variables.
Whether the queries return data is the e2e test's part (e2e/test_dashboards.py). The ConfigMaps: rendered by the
real helm only when dashboards.enabled."""
from __future__ import annotations

import json
import pathlib
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

# Same folder: pytest puts it on sys.path (mypy does not know that).
from test_chart_renders import render  # type: ignore[import-not-found]

ROOT = pathlib.Path(__file__).resolve().parents[3]
DASHBOARDS = sorted((ROOT / "charts" / "textgen-operator" / "files" / "dashboards").glob("*.json"))
METRIC_DOCS = (ROOT / "server" / "docs" / "metrics.md", ROOT / "operator" / "docs" / "metrics.md")
# Matchers every selector of a dashboard must have: its variables, so the panel shows the chosen TGS / operator.
REQUIRED_MATCHERS = {"textgen-tgs": {("namespace", "=", "$namespace"), ("textgen_dev_service", "=", "$service")},
                     "textgen-operator": {("job", "=~", "$job")}}
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def dashboard(path: pathlib.Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def targets(board: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(panel["title"], target) for panel in board["panels"] for target in panel["targets"]]


def documented_series() -> set[str]:
    """Series names the metric docs' tables give (a histogram's _bucket, _sum and _count), plus `up`."""
    names = {"up"}
    for doc in METRIC_DOCS:
        for name, kind in re.findall(r"^\| `(\w+)` \| ([\w ()]+?) \|", doc.read_text(), re.M):
            suffixes = ("_bucket", "_sum", "_count") if kind.startswith("histogram") else ("",)
            names |= {name + suffix for suffix in suffixes}
    return names


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_grafana_json_with_a_prometheus_datasource_variable(path: pathlib.Path) -> None:
    board = dashboard(path)
    assert board["uid"] == path.stem and board["schemaVersion"] >= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)) and board["panels"]
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']}: no unit"
        assert panel["description"], f"{panel['title']}: no description"
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel["title"]
        assert all(t["datasource"] == panel["datasource"] for t in panel["targets"]), panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_variable_used_is_defined_before_use(path: pathlib.Path) -> None:
    board = dashboard(path)
    defined: list[str] = []
    for variable in board["templating"]["list"]:
        # A variable's own query may use only the variables above it (Grafana resolves them in order).
        used = {a or b for a, b in VARIABLE.findall(json.dumps(variable.get("definition", "")))}
        assert used <= set(defined), f"${variable['name']} uses {used - set(defined)} before they are defined"
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == "${datasource}"
            assert re.fullmatch(r"label_values\(.+, \w+\)", variable["definition"]), variable["definition"]
            # The classic query string (Grafana migrates it into its editor's form); definition is what it shows.
            assert variable["query"] == variable["definition"], variable["name"]
        defined.append(variable["name"])
    for title, target in targets(board):
        used = {a or b for a, b in VARIABLE.findall(target["expr"])} - {"__rate_interval"}
        assert used <= set(defined), f"{title}: {used - set(defined)} not defined"
    assert {"namespace", "service"} <= set(defined) if path.stem == "textgen-tgs" else "job" in defined


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty Prometheus on 127.0.0.1 (no scrape targets), its base URL."""
    proc = subprocess.run([str(ROOT / "hack" / "build-tools.sh"), "--print-metrics-bin-dir"], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip("the metrics tools are not built yet: run hack/build-tools.sh (metrics)")
    work = tmp_path_factory.mktemp("prometheus")
    (work / "prometheus.yml").write_text("global: {scrape_interval: 1m}\n")
    url = f"http://127.0.0.1:{free_port()}"
    server = subprocess.Popen([f"{proc.stdout.strip()}/prometheus", f"--config.file={work}/prometheus.yml",
                               f"--storage.tsdb.path={work}/data", f"--web.listen-address={url[7:]}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not ready(url):
            assert server.poll() is None and time.monotonic() < deadline, "Prometheus did not start"
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(10)


def ready(url: str) -> bool:
    try:
        return bool(urllib.request.urlopen(f"{url}/-/ready", timeout=1).status == 200)
    except OSError:
        return False


def parse(url: str, expr: str) -> dict[str, Any]:
    """Prometheus' syntax tree of `expr`; fails with Prometheus' parse error."""
    data = urllib.parse.urlencode({"query": expr}).encode()
    try:
        with urllib.request.urlopen(f"{url}/api/v1/parse_query", data=data, timeout=10) as answer:
            return dict(json.load(answer)["data"])
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{expr!r}: {error.read().decode()}") from None


def selectors(tree: Any) -> Iterator[list[dict[str, str]]]:
    """The matchers of every vector and matrix selector in a syntax tree."""
    if isinstance(tree, dict):
        if tree.get("type") in ("vectorSelector", "matrixSelector"):
            yield tree["matchers"]
        for value in tree.values():
            yield from selectors(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from selectors(value)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_query_parses_and_selects_documented_series_by_the_variables(prometheus: str,
                                                                          path: pathlib.Path) -> None:
    known, board = documented_series(), dashboard(path)
    for title, target in targets(board):
        # Variables filled in as Grafana fills them, with values that name themselves.
        expr = VARIABLE.sub(lambda m: "1m" if (m.group(1) or m.group(2)) == "__rate_interval"
                            else f"${m.group(1) or m.group(2)}", target["expr"])
        found = list(selectors(parse(prometheus, expr)))
        assert found, f"{title}: {expr} selects no series"
        for matchers in found:
            by_name = {(m["name"], m["type"], m["value"]) for m in matchers}
            name = next(m["value"] for m in matchers if m["name"] == "__name__")
            assert name in known, f"{title}: {name} is in neither metrics doc"
            assert REQUIRED_MATCHERS[path.stem] <= by_name, f"{title}: {name} not selected by the variables"


def test_configmaps_only_when_enabled_with_the_sidecar_label_and_the_files() -> None:
    assert not [d for d in render() if d["kind"] == "ConfigMap" and "dashboard" in d["metadata"]["name"]]
    docs = render("dashboards.enabled=true", "dashboards.namespace=monitoring",
                  "dashboards.annotations.grafana_folder=textgen")
    maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap" and "dashboard" in d["metadata"]["name"]}
    assert set(maps) == {"t-textgen-operator-dashboard-tgs", "t-textgen-operator-dashboard-operator"}
    for config_map in maps.values():
        assert config_map["metadata"]["namespace"] == "monitoring"
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["annotations"] == {"grafana_folder": "textgen"}
        [(key, text)] = config_map["data"].items()
        assert json.loads(text) == dashboard(ROOT / "charts/textgen-operator/files/dashboards" / key)
    relabelled = render("dashboards.enabled=true", "dashboards.labels.grafana_dashboard=null",
                        "dashboards.labels.team=ml")
    [labels] = {json.dumps(d["metadata"]["labels"]) for d in relabelled if "dashboard-tgs" in d["metadata"]["name"]}
    assert "grafana_dashboard" not in json.loads(labels) and json.loads(labels)["team"] == "ml"
