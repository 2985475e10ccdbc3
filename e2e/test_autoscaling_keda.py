"""spec.autoscaling with --autoscaling-provider keda, on the real API server with KEDA's own ScaledObject CRD
(v2.21.0, from the Go module proxy: hack/keda-crds.sh) and the chart's RBAC rendered for provider keda.

What is real: KEDA's CRD schema (the operator's ScaledObject is created for real, not dry-run; nothing it sends
may be pruned), the chart's keda RBAC (the operator runs with its ServiceAccount's token and the args of the
chart's Deployment), the TGS's scale subresource that KEDA's scaleTargetRef names, garbage collection.
What is not: KEDA's controller and metrics server (not built, hack/README.md says why), so no ScaledObject here
ever gets a status, and nothing queries Prometheus: the trigger's serverAddress is a loopback port this test
listens on, and the test fails if anything (the operator) connects to it."""
from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.harness import REPO_ROOT, Cluster, apply_yaml, missing, wait_for
from e2e.operator_run import (CHART, Operator, condition, get_tgs, helm, install_chart, permission_errors,
                              run_operator, tiny, token_kubeconfig, wait_ready)
from textgen_operator.builders.autoscaling import build_scaled_object
from textgen_operator.builders.autoscaling_metrics import BUILTIN_METRICS
from textgen_operator.config import parse_config
from textgen_operator.spec import tgs_spec

RELEASE, SYSTEM_NS = "textgen-operator-keda", "textgen-keda-system"
SCALED_OBJECT_CRD = "scaledobjects.keda.sh"
# What the chart's render for provider keda puts in the cluster (the rest, its Deployment and Service, is the
# operator process this test runs itself).
APPLIED_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ClusterKopfPeering"}
OPERATOR_VERBS = ("get", "list", "watch", "create", "patch", "delete")


def keda_crds_dir() -> Path:
    proc = subprocess.run([str(REPO_ROOT / "hack" / "keda-crds.sh")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"hack/keda-crds.sh failed: {proc.stderr}"
    return Path(proc.stdout.strip())


def crd_json(cluster: Cluster, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "crd", name, "--ignore-not-found", "-o", "json").stdout
    return dict(json.loads(out)) if out.strip() else {}


def crd_metadata(cluster: Cluster, name: str) -> dict[str, Any]:
    return dict(crd_json(cluster, name).get("metadata") or {})


def crd_established(cluster: Cluster, name: str) -> bool:
    crd = crd_json(cluster, name)
    conditions = crd.get("status", {}).get("conditions") or []
    established = any(c["type"] == "Established" and c["status"] == "True" for c in conditions)
    return established and "deletionTimestamp" not in crd["metadata"]


@pytest.fixture(scope="module")
def prometheus_port() -> Iterator[socket.socket]:
    """A listening loopback socket as the trigger's Prometheus: nothing may connect to it (KEDA is not running,
    and the operator only writes the address into the ScaledObject)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        yield listener


def keda_cluster_rbac(rbac_dir: Path) -> list[dict[str, Any]]:
    """KEDA's own cluster-wide RBAC from the same module (config/rbac: ClusterRole and ClusterRoleBinding
    keda-operator, for ServiceAccount keda/keda-operator): what KEDA's operator may do to the TGS it scales."""
    docs = [doc for name in ("role.yaml", "role_binding.yaml")
            for doc in yaml.safe_load_all((rbac_dir / name).read_text()) if doc]
    return [doc for doc in docs if doc["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def render_chart(cluster: Cluster, address: str) -> list[dict[str, Any]]:
    """helm template of the chart with autoscaling.provider=keda, for the cluster's Kubernetes version."""
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    text = helm(cluster, "template", RELEASE, str(CHART), "--namespace", SYSTEM_NS, "--kube-version", version,
                "--set", "autoscaling.provider=keda", "--set", f"autoscaling.keda.prometheusAddress={address}",
                "--set", f"peering.name={RELEASE}")
    return [doc for doc in yaml.safe_load_all(text) if doc]


def deployment_args(rendered: list[dict[str, Any]]) -> list[str]:
    """The operator's args from the chart's Deployment, but its ports (the local process picks free ones)."""
    [deployment] = [doc for doc in rendered if doc["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return [arg for arg in container["args"] if not arg.startswith(("--liveness-port", "--metrics-port"))]


@pytest.fixture(scope="module")
def keda_operator(cluster: Cluster, prometheus_port: socket.socket,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Operator, list[str]]]:
    """KEDA's ScaledObject CRD installed, the chart's keda RBAC server-side applied, the operator running as the
    chart's ServiceAccount with the chart's args. Yields the operator and its args."""
    crds = keda_crds_dir()
    crd = crds / "keda.sh_scaledobjects.yaml"
    wait_for(lambda: "deletionTimestamp" not in crd_metadata(cluster, SCALED_OBJECT_CRD), 60,
             "the ScaledObject CRD of an earlier run deleted")
    cluster.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", str(crd))
    wait_for(lambda: crd_established(cluster, SCALED_OBJECT_CRD), 30, "KEDA's ScaledObject CRD Established")
    install_chart(cluster, "textgen-operator", "textgen-system")   # the TGS and kopf CRDs, as the other modules
    host, port = prometheus_port.getsockname()
    rendered = render_chart(cluster, f"http://{host}:{port}")
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NS}}
    manifest = yaml.safe_dump_all([namespace, *(doc for doc in rendered if doc["kind"] in APPLIED_KINDS),
                                   *keda_cluster_rbac(crds.parents[1] / "rbac")])
    try:
        cluster.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-", input=manifest)
        kubeconfig = token_kubeconfig(cluster, tmp_path_factory.mktemp("keda") / "kubeconfig", RELEASE, SYSTEM_NS)
        args = deployment_args(rendered)
        with run_operator(kubeconfig, kubeconfig.parent, *args, "--blocked-retry-seconds", "2") as handle:
            yield handle, args
    finally:
        assert_nothing_dialled(prometheus_port)
        cluster.kubectl("delete", "--wait=false", "--ignore-not-found", "-f", "-", input=manifest)
        # Waited for: a rerun's apply must not land on a CRD that is still being deleted.
        cluster.kubectl("delete", "crd", SCALED_OBJECT_CRD, "--timeout=60s")


def scaled_object(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", "scaledobjects.keda.sh", name, "-n", namespace, "-o", "json", "--ignore-not-found")
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def adapter_query(metric: str, namespace: str, name: str) -> str:
    """The prometheus-adapter externalRules metricsQuery of an external metric, with the matchers the HPA's
    selector would give (namespace, textgen_dev_service=<TGS>)."""
    rules = yaml.safe_load((CHART / "files" / "prometheus-adapter-rules.yaml").read_text())["externalRules"]
    [rule] = [r for r in rules if r["name"]["as"] == metric]
    return str(rule["metricsQuery"]).replace("<<.LabelMatchers>>",
                                             f'namespace="{namespace}",textgen_dev_service="{name}"')


def assert_nothing_dialled(listener: socket.socket) -> None:
    try:
        conn, peer = listener.accept()
    except BlockingIOError:
        return
    conn.close()
    raise AssertionError(f"{peer} connected to the trigger's Prometheus address; nothing may (KEDA is not running)")


def test_scaled_object_on_kedas_crd(cluster: Cluster, keda_operator: tuple[Operator, list[str]],
                                    prometheus_port: socket.socket, namespace: str) -> None:
    operator, args = keda_operator
    name = "keda"
    apply_yaml(cluster, tiny(name, replicas=1, autoscaling={"minReplicas": 1, "maxReplicas": 3}), namespace)
    stored = wait_for(lambda: scaled_object(cluster, namespace, name), 60, "the operator's ScaledObject")
    [owner] = stored["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("TextGenerationService", name, True), owner
    # KEDA scales a custom resource through the scale subresource of scaleTargetRef's apiVersion/kind/name.
    target = stored["spec"]["scaleTargetRef"]
    assert target == {"apiVersion": "textgen.dev/v1alpha1", "kind": "TextGenerationService", "name": name}
    scale = json.loads(cluster.kubectl("get", "--raw", f"/apis/textgen.dev/v1alpha1/namespaces/{namespace}/"
                                       f"textgenerationservices/{name}/scale").stdout)
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 1, scale
    [trigger] = stored["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue", trigger
    host, port = prometheus_port.getsockname()
    assert trigger["metadata"]["serverAddress"] == f"http://{host}:{port}"
    autoscaling = tgs_spec(get_tgs(cluster, namespace, name)).autoscaling     # the default metric type
    assert autoscaling is not None
    assert trigger["metadata"]["query"] == adapter_query(BUILTIN_METRICS[autoscaling.metric.type], namespace, name)
    assert (stored["spec"]["minReplicaCount"], stored["spec"]["maxReplicaCount"]) == (1, 3)

    # Created for real under KEDA's schema: everything the operator sends is stored (nothing pruned).
    config = parse_config(args)

    def pruned() -> list[str]:
        sent = build_scaled_object(get_tgs(cluster, namespace, name), config)
        return missing(sent["spec"], (scaled_object(cluster, namespace, name) or {}).get("spec"))
    try:       # the behavior follows the TGS's status: the operator re-applies when that changes
        wait_for(lambda: not pruned(), 30, "the stored ScaledObject spec to hold all the operator sends")
    except AssertionError:
        assert pruned() == []
    # The CRD is KEDA's real schema: what it refuses is refused (triggers has minItems 1).
    invalid = {**stored, "metadata": {"name": "invalid"}, "spec": {**stored["spec"], "triggers": []}}
    with pytest.raises(RuntimeError, match="spec.triggers"):
        apply_yaml(cluster, yaml.safe_dump(invalid), namespace)

    # No KEDA controller runs, so the ScaledObject never gets a status: the TGS says it waits, and serves.
    wait_ready(cluster, namespace, name, 1)
    scaling = condition(get_tgs(cluster, namespace, name), "Autoscaling")
    assert (scaling["status"], scaling["reason"]) == ("Unknown", "AutoscalerPending"), scaling
    assert "check that KEDA runs" in scaling["message"], scaling

    # Removed: the ScaledObject goes, and so does the condition.
    cluster.kubectl("patch", "tgs", name, "-n", namespace, "--type=json",
                    "-p", '[{"op": "remove", "path": "/spec/autoscaling"}]')
    wait_for(lambda: scaled_object(cluster, namespace, name) is None, 60, "the ScaledObject deleted")
    wait_for(lambda: not condition(get_tgs(cluster, namespace, name), "Autoscaling"), 60,
             "the Autoscaling condition gone")
    assert operator.process.poll() is None
    assert permission_errors(operator.log_path) == []
    assert_nothing_dialled(prometheus_port)


def test_pods_metric_is_refused_with_keda(cluster: Cluster, keda_operator: tuple[Operator, list[str]],
                                         prometheus_port: socket.socket, namespace: str) -> None:
    """KEDA's Prometheus trigger needs a PromQL query: a Pods metric gets Degraded, not a ScaledObject."""
    operator, _ = keda_operator
    name = "pods-metric"
    metric = {"type": "Pods", "name": "tgi_request_in_flight", "averageValue": "6"}
    apply_yaml(cluster, tiny(name, replicas=1, autoscaling={"minReplicas": 1, "maxReplicas": 3, "metric": metric}),
               namespace)
    degraded = wait_for(lambda: (c := condition(get_tgs(cluster, namespace, name), "Degraded"))
                        .get("reason") == "AutoscalingMetricUnsupported" and c, 60,
                        "Degraded/AutoscalingMetricUnsupported")
    assert degraded["status"] == "True" and "--autoscaling-provider keda" in degraded["message"], degraded
    wait_for(lambda: get_tgs(cluster, namespace, name).get("status", {}).get("readyReplicas") == 1, 60,
             "the pod serving anyway (not blocking)")
    assert scaled_object(cluster, namespace, name) is None
    assert permission_errors(operator.log_path) == []
    assert_nothing_dialled(prometheus_port)


def can_i(cluster: Cluster, user: str, verb: str, namespace: str) -> bool:
    proc = cluster.kubectl("auth", "can-i", verb, SCALED_OBJECT_CRD, "-n", namespace, "--as", user, check=False)
    return proc.stdout.strip() == "yes"


def test_chart_rbac_for_keda(cluster: Cluster, keda_operator: tuple[Operator, list[str]], namespace: str) -> None:
    """The chart's RBAC for provider keda grants what the operator does on ScaledObjects, and no more; the
    default provider's (the textgen-operator release) grants nothing on them."""
    keda_user = f"system:serviceaccount:{SYSTEM_NS}:{RELEASE}"
    assert {verb: can_i(cluster, keda_user, verb, namespace) for verb in OPERATOR_VERBS} == \
        dict.fromkeys(OPERATOR_VERBS, True)
    assert not can_i(cluster, keda_user, "update", namespace)
    assert not can_i(cluster, keda_user, "deletecollection", namespace)
    default_user = "system:serviceaccount:textgen-system:textgen-operator"
    assert [verb for verb in OPERATOR_VERBS if can_i(cluster, default_user, verb, namespace)] == []


def test_kedas_own_rbac_reaches_the_tgs_scale_subresource(cluster: Cluster, keda_operator: tuple[Operator, list[str]],
                                                          namespace: str) -> None:
    """KEDA's operator (its own ClusterRole, from the module) may read and write the TGS's scale subresource,
    which is how it scales the scaleTargetRef, and make the HPA it derives from the ScaledObject."""
    keda = "system:serviceaccount:keda:keda-operator"
    checks = [("get", "textgenerationservices.textgen.dev", "scale"),
              ("patch", "textgenerationservices.textgen.dev", "scale"),
              ("update", "textgenerationservices.textgen.dev", "scale"),
              ("create", "horizontalpodautoscalers.autoscaling", "")]
    answers = {check: cluster.kubectl("auth", "can-i", check[0], check[1], "-n", namespace, "--as", keda,
                                      *(["--subresource", check[2]] if check[2] else []), check=False).stdout.strip()
               for check in checks}
    assert answers == dict.fromkeys(checks, "yes"), answers
    # ... and no more than that on the TGS itself (its ClusterRole reads every kind: get, never delete).
    assert cluster.kubectl("auth", "can-i", "delete", "textgenerationservices.textgen.dev", "-n", namespace,
                           "--as", keda, check=False).stdout.strip() == "no"
