"""pod_health: warming, failing containers and warmup time, from kubelet-shaped pods (kubelet_pods.yaml)."""
from __future__ import annotations

import copy
import pathlib
from typing import Any

import pytest
import yaml

from textgen_operator.pod_health import (container_failures, count_warming, is_warming, last_warmup_seconds,
                                         unschedulable_message)

PODS: dict[str, dict[str, Any]] = yaml.safe_load((pathlib.Path(__file__).parent / "kubelet_pods.yaml").read_text())


def kubelet_pod(scenario: str, name: str | None = None) -> dict[str, Any]:
    pod = copy.deepcopy(PODS[scenario])
    if name:
        pod["metadata"]["name"] = name
    return pod


# scenario -> (warming, Degraded reason or None, words the message must carry)
@pytest.mark.parametrize("scenario, warming, reason, words", [
    ("warming", True, None, []),
    ("ready", False, None, []),
    ("crash_loop_waiting", False, "CrashLoopBackOff",
     ["pod demo-0", "container server", "restarted 3 times", "exit code 1 (Error)",
      "model has 12 heads, not divisible by --num-shard 5"]),
    ("crash_loop_running_again", False, "CrashLoopBackOff",
     ["running again after exiting", "restarted 4 times", "not divisible by --num-shard 5"]),
    ("terminated_error", False, "CrashLoopBackOff", ["exited with exit code 2 (Error)", "invalid choice: 'eetq'"]),
    ("image_pull", False, "ImagePullBackOff", ["waiting in ImagePullBackOff", "textgen-server:nope"]),
    ("restarted_and_recovered", False, None, []),
    ("started_not_ready", False, None, []),
    ("terminating", False, None, []),      # a stopping pod's exit is on purpose
    ("unschedulable", False, None, []),
])
def test_each_pod_state(scenario: str, warming: bool, reason: str | None, words: list[str]) -> None:
    pod = kubelet_pod(scenario)
    assert is_warming(pod) is warming
    failures = container_failures([pod])
    assert [f.reason for f in failures] == ([reason] if reason else [])
    for word in words:
        assert word in failures[0].describe()


def test_warming_counts_only_pods_still_starting() -> None:
    pods = [kubelet_pod("warming", "demo-0"), kubelet_pod("crash_loop_running_again", "demo-1"),
            kubelet_pod("ready", "demo-2"), kubelet_pod("started_not_ready", "demo-3"),
            kubelet_pod("terminating", "demo-4")]
    assert count_warming(pods) == 1


def test_the_log_tail_is_kept_short_and_on_one_line() -> None:
    pod = kubelet_pod("crash_loop_waiting")
    pod["status"]["containerStatuses"][0]["lastState"]["terminated"]["message"] = "noise\n" * 500 + "the reason"
    [failure] = container_failures([pod])
    assert failure.last_message.endswith("the reason") and "\n" not in failure.last_message
    assert len(failure.last_message) <= 603


def test_failures_are_listed_by_pod_name() -> None:
    pods = [kubelet_pod("image_pull", "demo-1"), kubelet_pod("crash_loop_waiting", "demo-0")]
    assert [(f.pod, f.reason) for f in container_failures(pods)] == [("demo-0", "CrashLoopBackOff"),
                                                                      ("demo-1", "ImagePullBackOff")]


def test_warmup_is_container_start_to_ready_of_the_latest_ready_pod() -> None:
    first = kubelet_pod("ready", "demo-1")                                     # 10:00:02 -> 10:00:44
    later = kubelet_pod("restarted_and_recovered", "demo-0")                  # 10:05:00 -> 10:05:30
    assert last_warmup_seconds([first]) == 42.0
    assert last_warmup_seconds([first, later]) == 30.0
    assert last_warmup_seconds([kubelet_pod("warming"), kubelet_pod("crash_loop_waiting")]) is None


def test_warmup_ignores_impossible_and_partial_timestamps() -> None:
    pod = kubelet_pod("ready")
    pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"] = "2026-11-30T11:00:00Z"   # after Ready
    assert last_warmup_seconds([pod]) is None
    del pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    assert last_warmup_seconds([pod]) is None


def test_unschedulable_message_is_the_schedulers() -> None:
    message = unschedulable_message([kubelet_pod("ready"), kubelet_pod("unschedulable")])
    assert message is not None and message.startswith("pod demo-0: 0/5 nodes are available: 2 Insufficient")


def test_a_crash_loop_message_does_not_change_with_the_back_off() -> None:
    """The kubelet's waiting message ("back-off 40s restarting failed container=...") grows every cycle: it is left
    out, so the condition changes with the restart count and the last message only."""
    first, later = kubelet_pod("crash_loop_waiting"), kubelet_pod("crash_loop_waiting")
    later["status"]["containerStatuses"][0]["state"]["waiting"]["message"] = "back-off 5m0s restarting failed"
    [a], [b] = container_failures([first]), container_failures([later])
    assert a.describe() == b.describe() and "back-off" not in a.describe()
