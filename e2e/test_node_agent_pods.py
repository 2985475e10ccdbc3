"""The node agent (hack/node-agent) runs pods as real local processes, as a kubelet would.

Each test pins its pod to an agent node (harness.agent_placement) and checks what the process itself saw
(environment, argv, mounts, user) through the pod IP, a loopback address, or through the status fields the
kubelet writes: probes, restarts, CrashLoopBackOff, termination messages, graceful deletion.
"""
from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes.client
import yaml
from kubernetes.client.rest import ApiException

from e2e.harness import Cluster, agent_placement, apply_yaml, wait_for


def pod_yaml(name: str, containers: list[dict[str, Any]], **spec: Any) -> str:
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {**agent_placement(), "terminationGracePeriodSeconds": 5, "containers": containers, **spec}}
    return str(yaml.safe_dump(body))


def read_pod(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    client = cluster.api_client()
    try:
        pod = kubernetes.client.CoreV1Api(client).read_namespaced_pod(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    value: dict[str, Any] = client.sanitize_for_serialization(pod)
    return value


def condition(pod: dict[str, Any] | None, kind: str) -> str | None:
    return next((c["status"] for c in (pod or {}).get("status", {}).get("conditions") or [] if c["type"] == kind), None)


def container_status(pod: dict[str, Any] | None) -> dict[str, Any]:
    statuses = (pod or {}).get("status", {}).get("containerStatuses") or [{}]
    return dict(statuses[0])


def wait_ready(cluster: Cluster, namespace: str, name: str, timeout: float = 30) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        pod = read_pod(cluster, namespace, name)
        return pod if condition(pod, "Ready") == "True" else None
    return wait_for(ready, timeout, f"pod {name} Ready")


def events(cluster: Cluster, namespace: str) -> list[tuple[str, str]]:
    items = kubernetes.client.CoreV1Api(cluster.api_client()).list_namespaced_event(namespace).items
    return [(e.reason, e.message) for e in items]


REPORTER = r'''
import http.server, json, os, sys
fstypes = {}
for line in open("/proc/self/mountinfo"):
    fields = line.split()
    fstypes[fields[4]] = fields[fields.index("-") + 1]
shm = os.statvfs("/dev/shm")
open("/data/written-by-pod", "w").write("yes")
body = json.dumps({
    "env": {k: os.environ.get(k) for k in ("GREETING", "TOKEN", "POD", "NS", "IP", "MODE", "EXPANDED")},
    "argv": sys.argv[1:], "uid": os.getuid(), "fstypes": {m: fstypes.get(m) for m in ("/data", "/dev/shm", "/tmp")},
    "shm_bytes": shm.f_blocks * shm.f_frsize, "config_file": open("/etc/config/greeting").read(),
    "root_writable": os.access("/", os.W_OK),
}).encode()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(body)
http.server.HTTPServer(("0.0.0.0", 80), Handler).serve_forever()
'''


def test_pod_sees_its_env_volumes_and_user_and_answers_on_its_pod_ip(cluster: Cluster, namespace: str) -> None:
    apply_yaml(cluster, """
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {token: s3cret}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {greeting: hello, MODE: fast}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: cache}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
""", namespace)
    container = {
        "name": "app", "image": "not-pulled:latest",
        "command": ["python3", "-c", REPORTER], "args": ["$(GREETING)-$(POD)", "$$(POD)", "$(UNDEFINED)"],
        "envFrom": [{"configMapRef": {"name": "settings"}}],
        "env": [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "EXPANDED", "value": "$(GREETING) from $(NS)"}],
        "ports": [{"name": "http", "containerPort": 80}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
        "securityContext": {"readOnlyRootFilesystem": True},
        "volumeMounts": [{"name": "cache", "mountPath": "/data"}, {"name": "shm", "mountPath": "/dev/shm"},
                         {"name": "tmp", "mountPath": "/tmp"}, {"name": "config", "mountPath": "/etc/config"}],
    }
    volumes = [{"name": "cache", "persistentVolumeClaim": {"claimName": "cache"}},
               {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
               {"name": "tmp", "emptyDir": {}}, {"name": "config", "configMap": {"name": "settings"}}]
    security = {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True,
                "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]}
    apply_yaml(cluster, pod_yaml("reporter", [container], volumes=volumes, securityContext=security), namespace)

    pod = wait_ready(cluster, namespace, "reporter")
    ip = pod["status"]["podIP"]
    assert ip.startswith("127."), ip
    with urllib.request.urlopen(f"http://{ip}:80/", timeout=10) as answer:
        report = json.load(answer)

    assert report["env"] == {"GREETING": "hello", "TOKEN": "s3cret", "POD": "reporter", "NS": namespace, "IP": ip,
                             "MODE": "fast", "EXPANDED": f"hello from {namespace}"}
    assert report["argv"] == ["hello-reporter", "$(POD)", "$(UNDEFINED)"]
    assert report["uid"] == 1000
    assert report["fstypes"]["/dev/shm"] == "tmpfs" and report["shm_bytes"] == 64 * 2**20
    assert report["fstypes"]["/data"] and report["fstypes"]["/tmp"], report["fstypes"]
    assert report["config_file"] == "hello"
    assert report["root_writable"] is False
    volume = kubernetes.client.CoreV1Api(cluster.api_client()).read_namespaced_persistent_volume_claim(
        "cache", namespace).spec.volume_name
    claim_dir = cluster.kubectl("get", "pv", volume, "-o", "jsonpath={.spec.hostPath.path}").stdout
    assert (Path(claim_dir) / "written-by-pod").read_text() == "yes"


COUNTER = ("import os; runs = open('/data/runs').read().count('run') if os.path.exists('/data/runs') else 0; "
           "open('/data/runs', 'a').write('run\\n'); open('/dev/termination-log', 'w').write(f'previous runs: {runs}')")


def test_claim_outlives_the_pod_and_a_finished_pod_reports_its_message(cluster: Cluster, namespace: str) -> None:
    apply_yaml(cluster, "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: state}\n"
                        "spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 10Mi}}}\n", namespace)
    core = kubernetes.client.CoreV1Api(cluster.api_client())
    messages = []
    for _ in range(2):
        apply_yaml(cluster, pod_yaml(
            "counter", [{"name": "count", "image": "x", "command": ["python3", "-c", COUNTER],
                         "volumeMounts": [{"name": "state", "mountPath": "/data"}]}],
            restartPolicy="Never", volumes=[{"name": "state", "persistentVolumeClaim": {"claimName": "state"}}]),
            namespace)
        done = wait_for(lambda: (p := read_pod(cluster, namespace, "counter")) and
                        p["status"].get("phase") == "Succeeded" and p, 30, "pod Succeeded")
        terminated = container_status(done)["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
        messages.append(terminated["message"])
        core.delete_namespaced_pod("counter", namespace)
        wait_for(lambda: read_pod(cluster, namespace, "counter") is None, 30, "pod removed")

    assert messages == ["previous runs: 0", "previous runs: 1"]


PROBED = r'''
import http.server, os, threading, time
start = time.time()
threading.Timer(1.5, lambda: open("/tmp/ready", "w").close()).start()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if time.time() - start < float(os.environ["HEALTHY_SECONDS"]) else 500)
        self.end_headers()
    def log_message(self, *args): pass
http.server.HTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
'''


def test_probes_drive_ready_and_a_failed_liveness_probe_restarts_the_container(cluster: Cluster,
                                                                                namespace: str) -> None:
    fast = {"periodSeconds": 1, "timeoutSeconds": 1}
    container = {
        "name": "server", "image": "x", "command": ["python3", "-c", PROBED],
        "env": [{"name": "HEALTHY_SECONDS", "value": "5"}], "ports": [{"name": "http", "containerPort": 8080}],
        "startupProbe": {"tcpSocket": {"port": "http"}, "failureThreshold": 20, **fast},
        "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ready"]}, **fast},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "failureThreshold": 2, **fast},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    apply_yaml(cluster, pod_yaml("probed", [container], volumes=[{"name": "tmp", "emptyDir": {}}]), namespace)

    running = wait_for(lambda: (p := read_pod(cluster, namespace, "probed")) and
                       container_status(p).get("state", {}).get("running") and p, 30, "container running")
    assert condition(running, "Ready") == "False"   # the exec readiness probe fails for 1.5 s
    wait_ready(cluster, namespace, "probed")

    restarted = wait_for(lambda: (p := read_pod(cluster, namespace, "probed")) and
                         container_status(p).get("restartCount", 0) >= 1 and p, 30, "a liveness restart")
    last = container_status(restarted)["lastState"]["terminated"]
    assert last["exitCode"] == 143 and last["reason"] == "Error", last   # SIGTERM'd, not SIGKILLed
    reasons = events(cluster, namespace)
    assert any(r == "Unhealthy" and m.startswith("Liveness probe failed: HTTP probe failed with statuscode: 500")
               for r, m in reasons), reasons
    assert any(r == "Killing" and "failed liveness probe, will be restarted" in m for r, m in reasons), reasons
    wait_ready(cluster, namespace, "probed")   # the new container passes its probes again


def test_crash_loop_backs_off_with_the_log_tail_as_last_message(cluster: Cluster, namespace: str) -> None:
    crash = "import sys; print('loading weights'); print('model has 12 heads, not divisible by 5'); sys.exit(3)"
    apply_yaml(cluster, pod_yaml("crasher", [{"name": "server", "image": "x", "command": ["python3", "-c", crash],
                                              "terminationMessagePolicy": "FallbackToLogsOnError"}]), namespace)

    def backing_off() -> dict[str, Any] | None:
        status = container_status(read_pod(cluster, namespace, "crasher"))
        waiting = status.get("state", {}).get("waiting") or {}
        return status if waiting.get("reason") == "CrashLoopBackOff" else None

    status = wait_for(backing_off, 30, "CrashLoopBackOff")
    assert status["restartCount"] >= 1 and status["ready"] is False
    assert status["state"]["waiting"]["message"].startswith("back-off 10s restarting failed container=server pod=crasher_")
    last = status["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (3, "Error")
    assert last["message"] == "loading weights\nmodel has 12 heads, not divisible by 5\n"
    assert read_pod(cluster, namespace, "crasher")["status"]["phase"] == "Running"  # type: ignore[index]
    # kubectl logs goes through the API server to the agent's log endpoint.
    previous = cluster.kubectl("logs", "-n", namespace, "crasher", "--previous").stdout
    assert previous.endswith("model has 12 heads, not divisible by 5\n"), previous


GRACEFUL = r'''
import signal, time
log = lambda what: open("/events/log", "a").write(f"{what} {time.time():.3f}\n")
signal.signal(signal.SIGTERM, lambda *_: log("sigterm"))   # noted, then ignored: SIGKILL must follow
log("started")
while True:
    time.sleep(0.1)
'''


def test_hooks_and_deletion_prestop_then_sigterm_then_sigkill_after_the_grace_period(
        cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    container = {"name": "server", "image": "x", "command": ["python3", "-c", GRACEFUL],
                 "lifecycle": {
                     "postStart": {"exec": {"command": ["sh", "-c", "echo poststart $(date +%s.%N) >> /events/log"]}},
                     "preStop": {"exec": {"command": [
                         "sh", "-c", "echo prestop $(date +%s.%N) >> /events/log; sleep 1"]}}},
                 "volumeMounts": [{"name": "events", "mountPath": "/events"}]}
    apply_yaml(cluster, pod_yaml("graceful", [container], terminationGracePeriodSeconds=3,
                                 volumes=[{"name": "events", "hostPath": {"path": str(tmp_path)}}]), namespace)
    wait_ready(cluster, namespace, "graceful")
    wait_for(lambda: (tmp_path / "log").exists() and len((tmp_path / "log").read_text().splitlines()) == 2, 10,
             "the process started and its postStart hook ran")

    deleted_at = time.time()
    kubernetes.client.CoreV1Api(cluster.api_client()).delete_namespaced_pod("graceful", namespace)
    wait_for(lambda: read_pod(cluster, namespace, "graceful") is None, 30, "pod removed")
    removed_after = time.time() - deleted_at

    lines = [line.split() for line in (tmp_path / "log").read_text().splitlines()]
    # The process and its postStart hook start together (the kubelet does not order them).
    assert sorted(what for what, _ in lines[:2]) == ["poststart", "started"], lines
    assert [what for what, _ in lines[2:]] == ["prestop", "sigterm"], lines
    prestop_at, sigterm_at = float(lines[2][1]), float(lines[3][1])
    assert sigterm_at - prestop_at >= 0.9          # SIGTERM only after the hook's 1 s
    assert 3 <= removed_after < 10, removed_after  # SIGKILL at the 3 s grace period, then removed


def test_claim_that_cannot_be_provisioned_stays_pending_with_an_event(cluster: Cluster, namespace: str) -> None:
    apply_yaml(cluster, "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: raw}\n"
                        "spec: {accessModes: [ReadWriteOnce], volumeMode: Block, "
                        "resources: {requests: {storage: 1Gi}}}\n", namespace)

    found = wait_for(lambda: [m for r, m in events(cluster, namespace) if r == "ProvisioningFailed"], 30,
                     "a ProvisioningFailed event")
    assert "volumeMode Block is not supported" in found[0]
    claim = kubernetes.client.CoreV1Api(cluster.api_client()).read_namespaced_persistent_volume_claim("raw", namespace)
    assert claim.status.phase == "Pending"


def test_accelerator_nodes_set_the_device_override_and_the_plain_node_does_not(cluster: Cluster,
                                                                                namespace: str) -> None:
    report = "import os; open('/dev/termination-log', 'w').write(os.environ.get('TEXTGEN_DEVICE_OVERRIDE', 'unset'))"
    gaudi = {"requests": {"habana.ai/gaudi": "1", "hugepages-2Mi": "1Gi", "memory": "1Gi"},
             "limits": {"habana.ai/gaudi": "1", "hugepages-2Mi": "1Gi", "memory": "1Gi"}}
    for name, node, resources in (("on-gaudi", "agent-gaudi-0", gaudi), ("on-cpu", "agent-cpu-0", {})):
        container = {"name": "c", "image": "x", "command": ["python3", "-c", report], "resources": resources}
        apply_yaml(cluster, pod_yaml(name, [container], restartPolicy="Never", **agent_placement(node)), namespace)

    def message(name: str) -> str | None:
        pod = read_pod(cluster, namespace, name)
        if (pod or {}).get("status", {}).get("phase") != "Succeeded":
            return None
        return str(container_status(pod)["state"]["terminated"]["message"])

    assert wait_for(lambda: message("on-gaudi"), 30, "the Gaudi-node pod done") == "cpu"
    assert wait_for(lambda: message("on-cpu"), 30, "the plain-node pod done") == "unset"
