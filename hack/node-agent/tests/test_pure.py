"""Table-driven tests of the agent's pure parts (no cluster): $(VAR) expansion, env order, back-off, phase,
log tails, quantities, mount order, identities, admission and provisioning refusals."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from textgen_node_agent.envs import ContainerConfigError, build_argv, build_env, expand  # noqa: E402
from textgen_node_agent.launch import build_identity, build_container_argv  # noqa: E402
from textgen_node_agent.pod_worker import unsupported_reason  # noqa: E402
from textgen_node_agent.provisioner import refusal  # noqa: E402
from textgen_node_agent.quantity import parse_quantity  # noqa: E402
from textgen_node_agent.restarts import backoff_delay, exit_code_of, log_tail  # noqa: E402
from textgen_node_agent.status import build_phase  # noqa: E402


@pytest.mark.parametrize("text, expected", [
    ("$(A)-$(B)", "1-two"), ("$$(A)", "$(A)"), ("$(MISSING)", "$(MISSING)"), ("$(A", "$(A"), ("a$", "a$"),
    ("$$$(A)", "$1"), ("$(A)$(A)", "11"),
])
def test_expand_follows_kubernetes_rules(text: str, expected: str) -> None:
    assert expand(text, {"A": "1", "B": "two"}) == expected


POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "x"}},
       "spec": {"nodeName": "n"}, "status": {"podIP": "127.1.0.5"}}


def test_env_order_envfrom_then_env_with_references_to_earlier_values() -> None:
    data = {("configmap", "cm"): {"A": "from-cm", "bad-key!": "skipped"}, ("secret", "s"): {"k": "sec"}}
    container = {"name": "c", "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "P_"}],
                 "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                         {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                         {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                         {"name": "MIX", "value": "$(P_A)/$(S)/$(LATER)"}, {"name": "LATER", "value": "x"}]}
    env = build_env(container, POD, {"PATH": "/bin"}, lambda kind, name: data.get((kind, name)))
    assert env == {"PATH": "/bin", "P_A": "from-cm", "S": "sec", "IP": "127.1.0.5", "L": "x",
                   "MIX": "from-cm/sec/$(LATER)", "LATER": "x"}


@pytest.mark.parametrize("ref, message", [
    ({"secretKeyRef": {"name": "absent", "key": "k"}}, 'secret "absent" not found'),
    ({"configMapKeyRef": {"name": "cm", "key": "nope"}}, "couldn't find key nope"),
    ({"resourceFieldRef": {"resource": "limits.cpu"}}, "not supported by the node agent"),
])
def test_missing_references_are_container_config_errors(ref: dict[str, Any], message: str) -> None:
    container = {"name": "c", "env": [{"name": "X", "valueFrom": ref}]}
    with pytest.raises(ContainerConfigError, match=message):
        build_env(container, POD, {}, lambda kind, name: {"k": "v"} if name == "cm" else None)


def test_optional_missing_reference_leaves_the_variable_unset() -> None:
    container = {"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "a", "key": "k",
                                                                                  "optional": True}}}]}
    assert build_env(container, POD, {}, lambda kind, name: None) == {}


def test_a_container_without_command_is_refused_not_guessed() -> None:
    with pytest.raises(ContainerConfigError, match="no command"):
        build_argv({"name": "c", "args": ["x"]}, {})
    assert build_argv({"name": "c", "command": ["echo"], "args": ["$(A)"]}, {"A": "1"}) == ["echo", "1"]


@pytest.mark.parametrize("restarts, delay", [(0, 0), (1, 10), (2, 20), (3, 40), (5, 160), (6, 300), (12, 300)])
def test_backoff_is_immediate_then_doubles_from_10s_to_300s(restarts: int, delay: float) -> None:
    assert backoff_delay(restarts) == delay


def test_exit_codes_of_signalled_processes() -> None:
    assert (exit_code_of(-9), exit_code_of(-15), exit_code_of(3)) == (137, 143, 3)


RUN: dict[str, Any] = {"state": {"running": {}}}
DONE0 = {"state": {"terminated": {"exitCode": 0}}}
DONE1 = {"state": {"terminated": {"exitCode": 1}}}
NEW = {"state": {"waiting": {"reason": "ContainerCreating"}}}
LOOP = {"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 1}}}


@pytest.mark.parametrize("policy, statuses, phase", [
    ("Always", [NEW], "Pending"), ("Always", [RUN, NEW], "Pending"), ("Always", [RUN], "Running"),
    ("Always", [LOOP], "Running"), ("Never", [DONE0], "Succeeded"), ("Never", [DONE0, DONE1], "Failed"),
    ("OnFailure", [DONE0], "Succeeded"), ("Never", [RUN, DONE1], "Running"),
])
def test_phase_as_the_kubelet_computes_it(policy: str, statuses: list[dict[str, Any]], phase: str) -> None:
    assert build_phase(policy, statuses) == phase


def test_log_tail_keeps_80_lines_and_2048_bytes(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    log.write_text("".join(f"line {i}\n" for i in range(200)))
    tail = log_tail(log)
    assert tail.splitlines()[-1] == "line 199" and len(tail.splitlines()) == 80
    log.write_text("x" * 5000)
    assert len(log_tail(log)) == 2048
    assert log_tail(tmp_path / "absent.log") == ""


@pytest.mark.parametrize("value, number", [("64Mi", 64 * 2**20), ("1Gi", 2**30), ("500M", 500 * 10**6), ("2", 2),
                                           ("1.5Ki", 1536)])
def test_quantities(value: str, number: int) -> None:
    assert parse_quantity(value) == number


def test_quantity_error_names_the_value() -> None:
    with pytest.raises(ValueError, match="'lots'"):
        parse_quantity("lots")


def test_a_mount_that_would_hide_a_volume_source_goes_last(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "cache").mkdir()
    container = {"name": "c", "volumeMounts": [{"name": "tmp", "mountPath": str(tmp_path.parent)},
                                               {"name": "data", "mountPath": "/data/sub"},
                                               {"name": "cache", "mountPath": "/data"}]}
    paths = {"tmp": tmp_path / "tmp", "data": tmp_path / "data", "cache": tmp_path / "cache"}
    argv = build_container_argv([], container, paths, build_identity({}, {}), ["true"])
    targets = [line.split()[-1] for line in argv[argv.index("-c") + 1].splitlines() if line.startswith("mount --bind")]
    assert targets == ["/data", "/data/sub", str(tmp_path.parent)]


def test_run_as_non_root_without_a_user_is_refused_as_the_kubelet_does() -> None:
    with pytest.raises(ContainerConfigError, match="runAsNonRoot"):
        build_identity({"securityContext": {"runAsNonRoot": True}}, {})
    identity = build_identity({"securityContext": {"runAsUser": 1000, "fsGroup": 2000}}, {})
    assert (identity.uid, identity.gid, identity.groups) == (1000, 1000, (2000,))
    assert identity.setpriv()[:3] == ["setpriv", "--reuid=1000", "--regid=1000"]


def test_unsupported_pods_and_claims_are_refused_with_a_reason(tmp_path: Path) -> None:
    assert "init containers" in str(unsupported_reason({"spec": {"initContainers": [{}], "containers": []}}))
    assert unsupported_reason({"spec": {"containers": []}}) is None
    block = {"spec": {"volumeMode": "Block", "resources": {"requests": {"storage": "1Gi"}}}}
    assert "Block" in str(refusal(block, tmp_path))
    huge = {"spec": {"resources": {"requests": {"storage": "100Ei"}}}}
    assert "only" in str(refusal(huge, tmp_path))
    assert refusal({"spec": {"resources": {"requests": {"storage": "1Mi"}}}}, tmp_path) is None


def test_log_endpoint_picks_the_current_or_previous_file_and_tails_it(tmp_path: Path) -> None:
    from textgen_node_agent.logs_server import pick_log, tail
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "0.log").write_text("old\n")
    (tmp_path / "c" / "1.log").write_text("a\nb\nc\n")
    assert pick_log(tmp_path, "c", 1, previous=False) == tmp_path / "c" / "1.log"
    assert pick_log(tmp_path, "c", 1, previous=True) == tmp_path / "c" / "0.log"
    assert pick_log(tmp_path, "c", 0, previous=True) is None
    assert tail(b"a\nb\nc\n", 2, None) == b"b\nc\n"
    assert tail(b"a\nb\nc\n", 0, None) == b""
    assert tail(b"a\nb\nc\n", None, 3) == b"a\nb"


def test_ipam_hands_out_free_addresses_and_sets_aside_one_that_failed_to_bind() -> None:
    import ipaddress
    from textgen_node_agent.ipam import LoopbackIPAM
    ipam = LoopbackIPAM(ipaddress.IPv4Network("127.254.254.0/29"))
    first = ipam.allocate("a")
    assert first == "127.254.254.1" and ipam.allocate("a") == first   # one address per pod
    assert ipam.allocate("b") == "127.254.254.2"
    ipam.release(first, failed=True)
    assert ipam.allocate("c") == "127.254.254.3"                      # the failed one is set aside
    ipam.release("127.254.254.2")
    assert ipam.allocate("d") == "127.254.254.2"                      # a released one comes back


def test_an_image_path_under_a_volume_mount_is_bound_back_after_the_mounts(tmp_path: Path) -> None:
    """A checkout under /tmp stays visible in a container that mounts an emptyDir at /tmp."""
    container = {"name": "c", "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                                                {"name": "data", "mountPath": "/data"}]}
    paths = {"tmp": tmp_path / "tmp", "data": tmp_path / "data"}
    argv = build_container_argv([], container, paths, build_identity({}, {}), ["true"],
                                image_paths=[Path("/tmp/checkout"), Path("/opt/venv")])
    lines = argv[argv.index("-c") + 1].splitlines()
    opened = lines.index("exec 30</tmp/checkout")
    tmp_mount = lines.index(f"mount --bind {tmp_path / 'tmp'} /tmp")
    bound = lines.index("mount --no-canonicalize --bind /proc/$$/fd/30 /tmp/checkout")
    assert opened < tmp_mount < bound
    assert not any("/opt/venv" in line for line in lines)   # not under any mount: left alone
