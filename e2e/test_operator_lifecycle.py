"""The operator end to end: installed by the real chart with the real helm, run as a local process that holds a
token of the chart's ServiceAccount (so the chart's RBAC is what it gets), against the real control plane.

Fake accelerator nodes come from kwok; their pods run nothing. Nothing here dials a pod or Service IP.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

from e2e.harness import REPO_ROOT, Cluster, apply_yaml, wait_for
from e2e.operator_run import Operator, chart_operator, condition, get_tgs, permission_errors, tiny, wait_ready

EXAMPLES = sorted((REPO_ROOT / "crds" / "examples").glob("*.yaml"))
RELEASE, SYSTEM_NS = "textgen-operator", "textgen-system"
OPERATOR_USER = f"system:serviceaccount:{SYSTEM_NS}:{RELEASE}"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
NODE_PREFIX = {"nvidia": "gpu-h100-", "gaudi": "gaudi2-", "cpu": "cpu-"}


@pytest.fixture(scope="module")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The chart installed by helm, and the operator running locally with the chart's identity."""
    with chart_operator(cluster, tmp_path_factory.mktemp("operator"), RELEASE, SYSTEM_NS) as handle:
        yield handle


def create_token_secret(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "secret", "generic", "hf-token", "-n", namespace, "--from-literal=token=hf_fake")


def children(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "statefulsets,services,poddisruptionbudgets,serviceaccounts", "-n", namespace,
                          "-l", f"textgen.dev/service={name}", "-o", "json").stdout
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in json.loads(out)["items"]}


def pods(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={name}",
                          "-o", "json").stdout
    return list(json.loads(out)["items"])


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_converges_on_the_right_nodes(cluster: Cluster, operator: Operator, namespace: str,
                                                    example: Path) -> None:
    create_token_secret(cluster, namespace)
    [applied] = apply_yaml(cluster, example, namespace)
    name, spec = applied["metadata"]["name"], applied["spec"]
    tgs = wait_ready(cluster, namespace, name, spec["replicas"])
    assert tgs["status"]["replicas"] == spec["replicas"]
    assert tgs["status"]["endpoint"] == f"http://{name}.{namespace}.svc:80"
    objs = children(cluster, namespace, name)
    assert set(objs) == {f"StatefulSet/{name}", f"Service/{name}", f"Service/{name}-headless",
                         f"PodDisruptionBudget/{name}", f"ServiceAccount/{name}"}
    for obj in objs.values():
        [ref] = obj["metadata"]["ownerReferences"]
        assert ref["uid"] == tgs["metadata"]["uid"] and ref["controller"] is True
    placed = pods(cluster, namespace, name)
    assert len(placed) == spec["replicas"]
    prefix = NODE_PREFIX[spec["accelerator"]["type"]]
    assert all(p["spec"]["nodeName"].startswith(prefix) for p in placed), [p["spec"]["nodeName"] for p in placed]
    printed = cluster.kubectl("get", "tgs", "-n", namespace).stdout
    assert name in printed and "AllReplicasReady" in printed


def test_scale_subresource_moves_pods(cluster: Cluster, operator: Operator, namespace: str) -> None:
    apply_yaml(cluster, tiny("scaled"), namespace)
    wait_ready(cluster, namespace, "scaled", 1)
    cluster.kubectl("scale", "tgs/scaled", "-n", namespace, "--replicas=3")
    tgs = wait_ready(cluster, namespace, "scaled", 3)
    assert tgs["status"]["selector"] == "app.kubernetes.io/instance=scaled,app.kubernetes.io/name=textgen"
    assert len(pods(cluster, namespace, "scaled")) == 3
    cluster.kubectl("scale", "tgs/scaled", "-n", namespace, "--replicas=1")
    wait_for(lambda: len(pods(cluster, namespace, "scaled")) == 1, 60, "scale down to one pod")


def test_spec_change_rolls_the_pods(cluster: Cluster, operator: Operator, namespace: str) -> None:
    apply_yaml(cluster, tiny("rolled", replicas=2), namespace)
    wait_ready(cluster, namespace, "rolled", 2)
    before = {p["metadata"]["uid"] for p in pods(cluster, namespace, "rolled")}
    cluster.kubectl("patch", "tgs", "rolled", "-n", namespace, "--type=merge",
                    "-p", '{"spec": {"limits": {"maxInputTokens": 512, "maxTotalTokens": 1024}}}')
    tgs = wait_ready(cluster, namespace, "rolled", 2)
    assert tgs["status"]["currentRevision"] == tgs["status"]["updateRevision"]
    after = pods(cluster, namespace, "rolled")
    assert not before & {p["metadata"]["uid"] for p in after}, "every pod was replaced"
    args = after[0]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-input-tokens") + 1] == "512"


def test_hand_edit_of_the_statefulset_is_reverted(cluster: Cluster, operator: Operator, namespace: str) -> None:
    apply_yaml(cluster, tiny("drift"), namespace)
    wait_ready(cluster, namespace, "drift", 1)
    cluster.kubectl("set", "image", "statefulset/drift", "-n", namespace, "server=someone/else:latest")
    cluster.kubectl("patch", "statefulset", "drift", "-n", namespace, "--type=merge",
                    "-p", '{"spec": {"replicas": 4}}')

    def reverted() -> bool:
        sts = children(cluster, namespace, "drift")["StatefulSet/drift"]
        image = sts["spec"]["template"]["spec"]["containers"][0]["image"]
        return bool(image != "someone/else:latest" and sts["spec"]["replicas"] == 1)

    wait_for(reverted, 30, "the operator to put the StatefulSet's image and replicas back")
    wait_ready(cluster, namespace, "drift", 1)


def test_deleting_the_tgs_garbage_collects_everything(cluster: Cluster, operator: Operator, namespace: str) -> None:
    apply_yaml(cluster, tiny("doomed"), namespace)
    wait_ready(cluster, namespace, "doomed", 1)
    cluster.kubectl("delete", "tgs", "doomed", "-n", namespace)
    wait_for(lambda: not children(cluster, namespace, "doomed") and not pods(cluster, namespace, "doomed"),
             60, "garbage collection of every child and pod")


def test_unschedulable_request_shows_degraded_with_the_schedulers_reason(cluster: Cluster, operator: Operator,
                                                                         namespace: str) -> None:
    # Two NVIDIA nodes with 8 GPUs each: a third 8-GPU replica cannot be placed.
    apply_yaml(cluster, tiny("toobig", accelerator={"type": "nvidia", "count": 8}, replicas=3), namespace)

    def degraded() -> dict[str, Any] | None:
        tgs = get_tgs(cluster, namespace, "toobig")
        c = condition(tgs, "Degraded")
        return c if c.get("status") == "True" and c.get("reason") == "Unschedulable" else None

    cond = wait_for(degraded, 60, "Degraded=True reason Unschedulable")
    assert "Insufficient nvidia.com/gpu" in cond["message"]
    assert condition(get_tgs(cluster, namespace, "toobig"), "Ready")["status"] == "False"
    events = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                             "involvedObject.kind=TextGenerationService,reason=Unschedulable", "-o", "json").stdout
    assert json.loads(events)["items"], "an Unschedulable Warning event"


def warning_events(cluster: Cluster, namespace: str, reason: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                          f"involvedObject.kind=TextGenerationService,reason={reason},type=Warning",
                          "-o", "json").stdout
    return list(json.loads(out)["items"])


def test_missing_secret_yields_a_condition_and_an_event_then_recovers(cluster: Cluster, operator: Operator,
                                                                      namespace: str) -> None:
    apply_yaml(cluster, tiny("nosecret", model={"id": "org/gated", "tokenSecretRef": {"name": "hf-token"}}),
               namespace)
    wait_for(lambda: condition(get_tgs(cluster, namespace, "nosecret"), "Degraded").get("reason") == "SecretNotFound",
             30, "Degraded reason SecretNotFound")
    assert "hf-token" in condition(get_tgs(cluster, namespace, "nosecret"), "Degraded")["message"]
    assert warning_events(cluster, namespace, "SecretNotFound")
    assert not children(cluster, namespace, "nosecret"), "nothing is created for a blocked spec"
    create_token_secret(cluster, namespace)
    wait_ready(cluster, namespace, "nosecret", 1, timeout=60)


def test_impossible_accelerator_count_yields_a_condition_and_an_event(cluster: Cluster, operator: Operator,
                                                                      namespace: str) -> None:
    apply_yaml(cluster, tiny("sixteen", accelerator={"type": "nvidia", "count": 16}), namespace)
    wait_for(lambda: condition(get_tgs(cluster, namespace, "sixteen"), "Degraded").get("reason")
             == "AcceleratorCountUnsatisfiable", 30, "Degraded reason AcceleratorCountUnsatisfiable")
    assert "at most 8" in condition(get_tgs(cluster, namespace, "sixteen"), "Degraded")["message"]
    assert warning_events(cluster, namespace, "AcceleratorCountUnsatisfiable")
    assert not children(cluster, namespace, "sixteen")
    # Another TGS in the same namespace is unaffected.
    apply_yaml(cluster, tiny("fine"), namespace)
    wait_ready(cluster, namespace, "fine", 1)


def test_gaudi_pods_meet_the_restricted_pod_security_level(cluster: Cluster, operator: Operator,
                                                           namespace: str) -> None:
    """Gaudi pods add no capability (SYS_NICE could never take effect for the non-root server, see
    builders/accelerators.py), so a namespace enforcing Pod Security 'restricted' admits them like any other."""
    create_token_secret(cluster, namespace)
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    [applied] = apply_yaml(cluster, REPO_ROOT / "crds" / "examples" / "llama-3.1-8b-gaudi.yaml", namespace)
    wait_ready(cluster, namespace, applied["metadata"]["name"], 1, timeout=120)
    assert not warning_events(cluster, namespace, "FailedCreate")


def test_pods_refused_at_admission_show_degraded_with_the_controllers_message(
        cluster: Cluster, operator: Operator, namespace: str) -> None:
    """A ResourceQuota that allows no pods refuses them at admission: no pod exists, and only the StatefulSet
    controller's FailedCreate Event says why. The TGS must say it too, and recover once the quota goes."""
    cluster.kubectl("create", "quota", "no-pods", "--hard=pods=0", "-n", namespace)

    def quota_counted() -> bool:   # before its status exists, admission refuses with "status unknown" instead
        out = cluster.kubectl("get", "resourcequota", "no-pods", "-n", namespace, "-o", "json").stdout
        hard: dict[str, str] = json.loads(out).get("status", {}).get("hard", {})
        return hard.get("pods") == "0"
    wait_for(quota_counted, 60, "the quota's status counted by the controller-manager")
    apply_yaml(cluster, tiny("refused"), namespace)

    def degraded() -> dict[str, Any] | None:
        c = condition(get_tgs(cluster, namespace, "refused"), "Degraded")
        return c if c.get("status") == "True" and c.get("reason") == "FailedCreate" else None

    cond = wait_for(degraded, 60, "Degraded=True reason FailedCreate")
    assert "exceeded quota: no-pods" in cond["message"] and "ResourceQuota" in cond["message"], cond["message"]
    assert not pods(cluster, namespace, "refused")
    [event] = warning_events(cluster, namespace, "FailedCreate")
    assert event["involvedObject"]["name"] == "refused" and "exceeded quota" in event["message"]
    # The namespace's admin lifts it: the controller's next retry creates the pod, and Degraded clears.
    cluster.kubectl("delete", "resourcequota", "no-pods", "-n", namespace)
    wait_ready(cluster, namespace, "refused", 1, timeout=120)
    assert condition(get_tgs(cluster, namespace, "refused"), "Degraded")["status"] == "False"


def test_warmup_is_measured_and_warming_pods_are_counted(cluster: Cluster, operator: Operator,
                                                         namespace: str) -> None:
    """kwok turns the pod Ready 4 s after its container started (the ready-delay annotation): warmingReplicas
    counts it meanwhile, and lastWarmupSeconds is container start to Ready, in whole seconds."""
    apply_yaml(cluster, tiny("warm", podAnnotations={"kwok.textgen.dev/ready-delay": "4s"}), namespace)
    wait_for(lambda: get_tgs(cluster, namespace, "warm").get("status", {}).get("warmingReplicas") == 1, 30,
             "warmingReplicas 1 while the pod warms up")
    tgs = wait_ready(cluster, namespace, "warm", 1, timeout=60)
    assert tgs["status"]["warmingReplicas"] == 0
    # At least the delay (less one second of timestamp rounding); kwok may turn it Ready late on a busy machine.
    assert 3 <= tgs["status"]["lastWarmupSeconds"] <= 15, tgs["status"]


def agent_nodes_ready(cluster: Cluster) -> bool:
    out = cluster.kubectl("get", "nodes", "-l", "textgen.dev/node-agent=true", "-o", "json").stdout
    return any(c["type"] == "Ready" and c["status"] == "True"
               for node in json.loads(out)["items"] for c in node.get("status", {}).get("conditions", []))


def test_a_crash_looping_launcher_shows_degraded_with_its_own_message(cluster: Cluster, operator: Operator,
                                                                      namespace: str) -> None:
    """A real launcher process (on a node of hack/node-agent) refuses an argument and exits 2: the kubelet's
    back-off, restartCount and log tail (FallbackToLogsOnError) reach the TGS as Degraded/CrashLoopBackOff with the
    launcher's own words, and a Warning Event; the pod never counts as warming."""
    # hack/cluster up always starts the node agent: its absence is a broken cluster, not a reason to skip.
    assert agent_nodes_ready(cluster), "no Ready node of hack/node-agent (label textgen.dev/node-agent=true)"
    scheduling = {"nodeSelector": {"textgen.dev/node-agent": "true"},
                  "tolerations": [{"key": "textgen.dev/node-agent", "operator": "Exists"}]}
    apply_yaml(cluster, tiny("crashing", accelerator={"type": "cpu", "count": 1}, scheduling=scheduling,
                             args=["--no-such-flag"]), namespace)

    def degraded() -> dict[str, Any] | None:
        tgs = get_tgs(cluster, namespace, "crashing")
        c = condition(tgs, "Degraded")
        assert tgs.get("status", {}).get("warmingReplicas", 0) == 0 or c.get("reason") != "CrashLoopBackOff"
        return c if c.get("status") == "True" and c.get("reason") == "CrashLoopBackOff" else None

    cond = wait_for(degraded, 120, "Degraded=True reason CrashLoopBackOff")
    assert "unrecognized arguments: --no-such-flag" in cond["message"], cond["message"]
    assert "pod crashing-0" in cond["message"]
    assert warning_events(cluster, namespace, "CrashLoopBackOff")
    assert condition(get_tgs(cluster, namespace, "crashing"), "Ready")["status"] == "False"


@pytest.mark.parametrize("spec, message", [
    ({"limits": {"maxInputTokens": 2048, "maxTotalTokens": 2048}}, "maxTotalTokens must be greater"),
    ({"accelerator": {"type": "gaudi", "count": 3}}, "Gaudi shards must be 1, 2, 4 or 8"),
    ({"gaudi": {"batchBucketSize": 8}}, "spec.gaudi is only valid with spec.accelerator.type: gaudi"),
    ({"autoscaling": {"minReplicas": 5, "maxReplicas": 4}}, "minReplicas must not exceed"),
])
def test_the_crd_rejects_inconsistent_specs(cluster: Cluster, operator: Operator, namespace: str,
                                            spec: dict[str, Any], message: str) -> None:
    with pytest.raises(RuntimeError, match=message):
        apply_yaml(cluster, tiny("bad", **spec), namespace)


def test_zero_writes_at_steady_state(cluster: Cluster, operator: Operator, namespace: str) -> None:
    """60 s after convergence the API server's audit log holds no write by the operator (kopf's peering
    heartbeat on the ClusterKopfPeering object excepted, and reported)."""
    for name in ("steady-a", "steady-b"):
        apply_yaml(cluster, tiny(name, replicas=2), namespace)
    for name in ("steady-a", "steady-b"):
        wait_ready(cluster, namespace, name, 2)
    # Namespaces of earlier tests still being deleted are not a steady state: their TGSs lose children.
    wait_for(lambda: "Terminating" not in cluster.kubectl("get", "namespaces", "-l", "e2e.textgen.dev/test",
                                                          "--no-headers").stdout, 120,
             "earlier test namespaces to finish terminating")
    time.sleep(5)                       # let the last status write's own watch event come back
    start = time.time()
    reconciles_before = operator.metric("textgen_operator_reconciles_total")
    time.sleep(60)
    writes = [e for e in cluster.audit_events(since=start)
              if e["user"]["username"] == OPERATOR_USER and e["verb"] in WRITE_VERBS]
    ours = [e for e in writes if e["objectRef"].get("resource") != "clusterkopfpeerings"]
    heartbeats = len(writes) - len(ours)
    sys.stderr.write(f"steady state: {len(ours)} writes, {heartbeats} peering heartbeats in 60 s; "
                     f"{operator.metric('textgen_operator_reconciles_total') - reconciles_before:.0f} reconciles\n")
    assert ours == [], [(e["verb"], e["objectRef"]) for e in ours]


def test_the_operator_log_has_no_permission_errors(operator: Operator) -> None:
    """The chart's RBAC is all the operator (and kopf inside it) needs: no 403 / Forbidden anywhere in its log
    after every test above ran (kopf's CRD scanning is off, so it never lists customresourcedefinitions)."""
    denied = permission_errors(operator.log_path)
    assert denied == [], "\n".join(denied[:10])
