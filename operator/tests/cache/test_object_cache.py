"""ObjectCache: newest version wins, pods are indexed by their owning TGS, deletions and our own status writes."""
from __future__ import annotations

from typing import Any

from textgen_operator.cache import ObjectCache


def obj(kind: str, name: str, rv: str, **extra: Any) -> dict[str, Any]:
    api = "apps/v1" if kind == "StatefulSet" else "v1"
    return {"apiVersion": api, "kind": kind,
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv, **extra}}


def test_an_older_watch_event_never_replaces_a_newer_write() -> None:
    cache = ObjectCache()
    cache.put(obj("StatefulSet", "a", "20", generation=2))
    cache.put(obj("StatefulSet", "a", "19", generation=1))     # a trailing watch event
    held = cache.get("apps/v1/StatefulSet", "ns", "a")
    assert held is not None and held["metadata"]["generation"] == 2
    cache.put(obj("StatefulSet", "a", "21", generation=3))
    held = cache.get("apps/v1/StatefulSet", "ns", "a")
    assert held is not None and held["metadata"]["generation"] == 3


def test_pods_are_found_by_their_owner_and_forgotten_on_delete() -> None:
    cache = ObjectCache()
    for i in range(3):
        cache.put(obj("Pod", f"svc-{i}", str(i + 1), labels={"textgen.dev/service": "svc"}))
    cache.put(obj("Pod", "other", "9", labels={"textgen.dev/service": "other"}))
    assert sorted(p["metadata"]["name"] for p in cache.pods_of("ns", "svc")) == ["svc-0", "svc-1", "svc-2"]
    cache.delete(obj("Pod", "svc-1", "10", labels={"textgen.dev/service": "svc"}))
    assert len(cache.pods_of("ns", "svc")) == 2 and cache.get("v1/Pod", "ns", "svc-1") is None


def test_a_status_we_wrote_is_remembered_until_the_watch_catches_up() -> None:
    cache = ObjectCache()
    cache.put(obj("Thing", "t", "5"))
    cache.set_status("v1/Thing", "ns", "t", {"replicas": 2})
    held = cache.get("v1/Thing", "ns", "t")
    assert held is not None and held["status"] == {"replicas": 2}
    cache.set_status("v1/Thing", "ns", "missing", {"replicas": 1})     # unknown objects are not invented
    assert cache.get("v1/Thing", "ns", "missing") is None
