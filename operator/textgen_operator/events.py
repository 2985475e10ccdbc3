"""The StatefulSet controller's FailedCreate warnings about a TGS's pods, and which of them still hold. Pure.

A pod that admission refuses (a namespace's Pod Security level, a ResourceQuota, a missing ServiceAccount) never
exists, so nothing in the pods says why; the StatefulSet controller records an Event (reason FailedCreate,
message "create Pod demo-0 in StatefulSet demo failed error: pods "demo-0" is forbidden: ...") on the
StatefulSet and retries with back-off. Those Events are the only place the reason appears.

An Event outlives its cause (the API server keeps Events for an hour), so a recorded failure holds only while
the pod it names is wanted (ordinal below spec.replicas) and has not been created since, for the StatefulSet
with that uid, and while its cause is not known to be gone (the ServiceAccount it missed exists now).
"""
from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from textgen_operator.names import Body
from textgen_operator.pod_health import parse_time

FAILED_CREATE = "FailedCreate"
# The field selector of the Event watch: only what this module reads is sent to the operator.
FIELD_SELECTOR = f"involvedObject.kind=StatefulSet,reason={FAILED_CREATE}"
_POD = re.compile(r"\bPod (\S+) in StatefulSet\b")
_MISSING_SERVICE_ACCOUNT = re.compile(r'serviceaccount "([^"]+)" not found')


@dataclass(frozen=True)
class FailedCreate:
    """One FailedCreate Event of a StatefulSet."""

    event: str                     # the Event's name (its key for updates and deletions)
    namespace: str
    statefulset: str
    statefulset_uid: str
    pod: str | None                # the pod the controller could not create, when the message names it
    message: str
    last_seen: datetime.datetime   # whole seconds (pod creationTimestamps have no finer resolution)


def _seconds(value: datetime.datetime) -> datetime.datetime:
    return value.replace(microsecond=0)


def _last_seen(event: Body) -> datetime.datetime | None:
    """The latest instant the Event reports: core/v1 lastTimestamp, or the events.k8s.io fields."""
    for value in (event.get("lastTimestamp"), (event.get("series") or {}).get("lastObservedTime"),
                  event.get("eventTime"), event.get("firstTimestamp"), event["metadata"].get("creationTimestamp")):
        parsed = parse_time(value)
        if parsed is not None:
            return _seconds(parsed)
    return None


def failed_create_from_event(event: Body) -> FailedCreate | None:
    """The FailedCreate an Event reports, or None for any other Event."""
    involved = event.get("involvedObject", {})
    seen = _last_seen(event)
    if event.get("reason") != FAILED_CREATE or involved.get("kind") != "StatefulSet" or seen is None:
        return None
    message = str(event.get("message", ""))
    pod = _POD.search(message)
    return FailedCreate(event["metadata"]["name"], str(involved.get("namespace") or event["metadata"].get("namespace")),
                        str(involved.get("name", "")), str(involved.get("uid", "")), pod.group(1) if pod else None,
                        message, seen)


def pod_supersedes(pod: Body, failure: FailedCreate) -> bool:
    """True when pod is the one the failure names, created at or after it (so that creation succeeded later)."""
    created = parse_time(pod["metadata"].get("creationTimestamp"))
    return (failure.pod == pod["metadata"]["name"] and created is not None
            and _seconds(created) >= failure.last_seen)


def _ordinal(pod: str, statefulset: str) -> int | None:
    suffix = pod[len(statefulset) + 1:] if pod.startswith(statefulset + "-") else ""
    return int(suffix) if suffix.isdigit() else None


def _holds(failure: FailedCreate, sts: Body, pods: list[Body], service_accounts: set[str]) -> bool:
    if failure.statefulset_uid and failure.statefulset_uid != sts["metadata"].get("uid"):
        return False     # an earlier StatefulSet of the same name
    missing = _MISSING_SERVICE_ACCOUNT.search(failure.message)
    if missing and missing.group(1) in service_accounts:
        return False     # created right after the StatefulSet; the controller's retry succeeds
    if failure.pod is None:
        return int(sts.get("status", {}).get("replicas", 0)) < int(sts.get("spec", {}).get("replicas", 1))
    ordinal = _ordinal(failure.pod, failure.statefulset)
    if ordinal is not None and ordinal >= int(sts.get("spec", {}).get("replicas", 1)):
        return False     # scaled below it: that pod is no longer wanted
    return not any(pod_supersedes(p, failure) for p in pods)


def current_failed_creates(failures: list[FailedCreate], sts: Body | None, pods: list[Body],
                           service_accounts: set[str]) -> list[FailedCreate]:
    """The failures that still hold, the newest per pod, by pod name."""
    if sts is None:
        return []
    newest: dict[str, FailedCreate] = {}
    for failure in failures:
        if _holds(failure, sts, pods, service_accounts):
            key = failure.pod or ""
            if key not in newest or newest[key].last_seen < failure.last_seen:
                newest[key] = failure
    return [newest[k] for k in sorted(newest)]


def _hint(message: str) -> str:
    if "violates PodSecurity" in message:
        return ("The namespace's Pod Security admission level (label pod-security.kubernetes.io/enforce) refuses "
                "these pods: run this TextGenerationService in a namespace whose level allows what the message "
                "names (the operator's own pods meet 'restricted'; a mutating webhook or policy may have added "
                "more), or change the spec")
    if "exceeded quota" in message:
        return "A ResourceQuota of the namespace refuses them: raise the quota or lower spec.replicas / resources"
    return "Fix what the message names; the StatefulSet controller retries by itself"


def describe_failed_create(failure: FailedCreate) -> str:
    """The Degraded message: the controller's own words, then what to do."""
    return f"the StatefulSet controller cannot create pods: {failure.message}. {_hint(failure.message)}"
