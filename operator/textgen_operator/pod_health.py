"""What a TGS's pods say about it: which still warm up, which containers fail, how long the last warmup took.

Pure: kubelet-shaped pod JSON in, facts out. The kubelet's vocabulary is used as is: `containerStatuses[].state`
(`waiting.reason` such as CrashLoopBackOff or ImagePullBackOff, `running.startedAt`, `terminated`),
`lastState.terminated` (exit code, reason and, with `terminationMessagePolicy: FallbackToLogsOnError`, the tail of
the log as its message), `restartCount`, `started` (the startup probe passed) and the pod's Ready condition.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass

from textgen_operator.names import Body

# Waiting reasons a kubelet gives a container that cannot run without someone changing something. ContainerCreating
# and PodInitializing are normal steps and are not here.
FAILING_WAITING_REASONS = frozenset({
    "CrashLoopBackOff", "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError", "PreStartHookError",
    "PostStartHookError",
})
CRASH_LOOP = "CrashLoopBackOff"
LAST_MESSAGE_CHARS = 600      # the end of a log tail is where a launcher says why it stopped


def parse_time(value: object) -> datetime.datetime | None:
    """An RFC 3339 timestamp of the API (`2026-01-01T00:00:00Z`, maybe with a fraction) as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _condition(pod: Body, kind: str) -> Body:
    return next((c for c in pod.get("status", {}).get("conditions", []) if c.get("type") == kind), {})


def pod_is_ready(pod: Body) -> bool:
    return bool(_condition(pod, "Ready").get("status") == "True")


def _is_deleting(pod: Body) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def _statuses(pod: Body) -> list[Body]:
    status = pod.get("status", {})
    return list(status.get("initContainerStatuses", [])) + list(status.get("containerStatuses", []))


@dataclass(frozen=True)
class ContainerFailure:
    """A container that cannot run or keeps exiting: what the TGS's Degraded condition reports."""

    pod: str
    container: str
    reason: str               # the kubelet's waiting reason; CrashLoopBackOff for every exit-and-restart state
    state: str                # what the container does now, in words
    restarts: int
    last_exit: str | None     # "exit code 1 (Error)" of the last termination, if any
    last_message: str         # the tail of lastState.terminated.message (the log tail with FallbackToLogsOnError)

    def describe(self) -> str:
        text = f"pod {self.pod}: container {self.container} {self.state}"
        if self.restarts:
            text += f", restarted {self.restarts} time{'s' if self.restarts != 1 else ''}"
        if self.last_exit:
            text += f", last {self.last_exit}"
        return text + (f"; its last message: {self.last_message.rstrip('.')}" if self.last_message else "")


def _exit_text(terminated: Body) -> str:
    reason = terminated.get("reason")
    return f"exit code {terminated.get('exitCode', '?')}" + (f" ({reason})" if reason else "")


def _tail(message: object) -> str:
    text = " ".join(str(message or "").split())      # one line: conditions and Events are read in tables
    return text if len(text) <= LAST_MESSAGE_CHARS else "..." + text[-LAST_MESSAGE_CHARS:]


def container_failure(pod_name: str, status: Body) -> ContainerFailure | None:
    """The failure one container status shows, or None when it runs or is starting normally.

    A container that exited (state.terminated with a non-zero code) or restarted and is not ready again is in the
    crash loop even between two back-off waits (the kubelet shows CrashLoopBackOff only while it waits)."""
    state, last = status.get("state", {}), status.get("lastState", {}).get("terminated") or {}
    restarts = int(status.get("restartCount", 0))
    waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
    exit_of = terminated or last
    if waiting.get("reason") in FAILING_WAITING_REASONS:
        reason = str(waiting["reason"])
        # CrashLoopBackOff's message only repeats the pod and the back-off, which grows each time (a write each).
        detail = waiting.get("message") if reason != CRASH_LOOP else None
        words = f"is waiting in {reason}" + (f" ({_tail(detail)})" if detail else "")
    elif terminated and int(terminated.get("exitCode", 0)) != 0:
        reason, words = CRASH_LOOP, f"exited with {_exit_text(terminated)}"
    elif restarts > 0 and last and not status.get("ready") and "running" in state:
        reason, words = CRASH_LOOP, "is running again after exiting and is not ready yet"
    else:
        return None
    return ContainerFailure(pod_name, str(status.get("name", "?")), reason, words, restarts,
                            _exit_text(exit_of) if exit_of else None, _tail(exit_of.get("message")))


def container_failures(pods: list[Body]) -> list[ContainerFailure]:
    """Every failing container of the pods that are not being deleted, by pod name."""
    found = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        if _is_deleting(pod):
            continue      # a stopping pod's containers exit on purpose
        for status in _statuses(pod):
            failure = container_failure(pod["metadata"]["name"], status)
            if failure is not None:
                found.append(failure)
    return found


def is_warming(pod: Body) -> bool:
    """Running, every container running, not ready, and some container has not passed its startup probe yet
    (loading the model or warming up). A crash-looping pod is failing, not warming; a started pod that is not
    ready (readiness lost later) is not warming either."""
    statuses = pod.get("status", {}).get("containerStatuses", [])
    return (pod.get("status", {}).get("phase") == "Running" and not _is_deleting(pod) and not pod_is_ready(pod)
            and bool(statuses) and all("running" in s.get("state", {}) for s in statuses)
            and any(not s.get("started") for s in statuses)
            and not any(container_failure(pod["metadata"]["name"], s) for s in _statuses(pod)))


def count_warming(pods: list[Body]) -> int:
    return sum(1 for p in pods if is_warming(p))


def warmup_seconds(pod: Body) -> tuple[datetime.datetime, float] | None:
    """(when it became Ready, seconds from its containers' start to that) for a Ready pod, else None.

    Start is the latest `state.running.startedAt` of its containers (the pod is ready only when all are), end the
    Ready condition's lastTransitionTime; both have one-second resolution in the API."""
    ready = _condition(pod, "Ready")
    ready_at = parse_time(ready.get("lastTransitionTime")) if ready.get("status") == "True" else None
    starts = [parse_time(s.get("state", {}).get("running", {}).get("startedAt"))
              for s in pod.get("status", {}).get("containerStatuses", [])]
    if ready_at is None or not starts or any(t is None for t in starts):
        return None
    started = max(t for t in starts if t is not None)
    return (ready_at, (ready_at - started).total_seconds()) if ready_at >= started else None


def last_warmup_seconds(pods: list[Body]) -> float | None:
    """Warmup of the pod that became Ready most recently (None when no pod tells)."""
    measured = [m for m in (warmup_seconds(p) for p in pods if not _is_deleting(p)) if m is not None]
    return max(measured)[1] if measured else None


def unschedulable_message(pods: list[Body]) -> str | None:
    """The scheduler's message for the first pod it could not place, if any."""
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        c = _condition(pod, "PodScheduled")
        if c.get("status") == "False" and c.get("reason") == "Unschedulable":
            return f"pod {pod['metadata']['name']}: {c.get('message', 'unschedulable')}"
    return None
