"""An in-memory view of the objects the operator watches, fed by kopf's watch events and by our own writes.

Reconciles read from here instead of the API server (the informer pattern): at steady state a reconcile sends
no request at all. The cache is primed by one LIST per kind before the first reconcile runs, so a miss means
"does not exist" and never causes a blind create.
"""
from __future__ import annotations

from typing import Any

from textgen_operator.events import FailedCreate, pod_supersedes
from textgen_operator.names import LABEL_SERVICE, Body

ObjKey = tuple[str, str, str]      # (apiVersion/kind, namespace, name)


def api_kind(obj: Body) -> str:
    return f"{obj['apiVersion']}/{obj['kind']}"


def _version(obj: Body) -> int | None:
    raw = obj.get("metadata", {}).get("resourceVersion")
    return int(raw) if isinstance(raw, str) and raw.isdigit() else None


class ObjectCache:
    """Latest known state of TGSs, their children and their pods."""

    def __init__(self) -> None:
        self._objects: dict[ObjKey, Body] = {}
        self._pods: dict[tuple[str, str], dict[str, Body]] = {}   # (namespace, owning TGS) -> name -> pod
        # (namespace, StatefulSet) -> Event name -> what the StatefulSet controller could not create
        self._failed_creates: dict[tuple[str, str], dict[str, FailedCreate]] = {}

    @staticmethod
    def key(obj: Body) -> ObjKey:
        meta = obj["metadata"]
        return api_kind(obj), str(meta.get("namespace", "")), str(meta["name"])

    def put(self, obj: Body) -> None:
        """Stores obj unless the cache already holds a newer version (watch events can trail our writes)."""
        key = self.key(obj)
        held = self._objects.get(key)
        new, old = _version(obj), _version(held) if held else None
        if held is not None and new is not None and old is not None and new < old:
            return
        self._objects[key] = obj
        if obj["kind"] == "Pod":
            owner = obj["metadata"].get("labels", {}).get(LABEL_SERVICE)
            if owner:
                self._pods.setdefault((key[1], owner), {})[key[2]] = obj
                self._forget_superseded(key[1], owner, obj)

    def delete(self, obj: Body) -> None:
        key = self.key(obj)
        self._objects.pop(key, None)
        if obj["kind"] == "Pod":
            owner = obj["metadata"].get("labels", {}).get(LABEL_SERVICE)
            self._pods.get((key[1], owner or ""), {}).pop(key[2], None)

    def _forget_superseded(self, namespace: str, statefulset: str, pod: Body) -> None:
        """A pod created after a FailedCreate for it ends that failure for good: when the pod is deleted later
        (a rollout replaces it), the old Event must not make the TGS look broken. (The StatefulSet and its
        pods' owner label carry the TGS's name.)"""
        failures = self._failed_creates.get((namespace, statefulset), {})
        for event, failure in list(failures.items()):
            if pod_supersedes(pod, failure):
                del failures[event]

    def put_failed_create(self, failure: FailedCreate) -> None:
        """Records a FailedCreate Event (a newer version of the same Event replaces it) unless its pod exists."""
        pod = self.get("v1/Pod", failure.namespace, failure.pod) if failure.pod else None
        if pod is not None and pod_supersedes(pod, failure):
            return
        self._failed_creates.setdefault((failure.namespace, failure.statefulset), {})[failure.event] = failure

    def delete_failed_create(self, namespace: str, statefulset: str, event: str) -> None:
        self._failed_creates.get((namespace, statefulset), {}).pop(event, None)

    def forget_failed_creates(self, namespace: str | None) -> None:
        """Drops every record of a namespace (all when None): the Event list is read again from scratch."""
        for key in [k for k in self._failed_creates if namespace is None or k[0] == namespace]:
            del self._failed_creates[key]

    def failed_creates_of(self, namespace: str, statefulset: str) -> list[FailedCreate]:
        return list(self._failed_creates.get((namespace, statefulset), {}).values())

    def get(self, kind: str, namespace: str, name: str) -> Body | None:
        return self._objects.get((kind, namespace, name))

    def pods_of(self, namespace: str, tgs_name: str) -> list[Body]:
        return list(self._pods.get((namespace, tgs_name), {}).values())

    def set_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Records a status we wrote, so a reconcile before the watch event does not write it again."""
        held = self._objects.get((kind, namespace, name))
        if held is not None:
            self._objects[(kind, namespace, name)] = {**held, "status": status}

    def __len__(self) -> int:
        return len(self._objects)
