"""Argo CD's health of live TGS objects: every version a watch delivers, evaluated by argocd/'s health.lua on
Argo CD's own Lua runtime (hack/tools/argocd-lua: gopher-lua with the libraries an argocd-cm customization gets).

With TEXTGEN_ARGOCD_CAPTURE=<dir> the watch also writes the first object of each stage, health and reason to
that dir (kubectl's view: managedFields stripped; named by capture_name), which is how argocd/'s testdata is
refreshed (argocd/README.md).
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.watch
import yaml

from e2e.harness import BUILD_TOOLS, REPO_ROOT, Cluster

HEALTH_DIR = REPO_ROOT / "argocd" / "resource_customizations" / "textgen.dev" / "TextGenerationService"
HEALTH_LUA = HEALTH_DIR / "health.lua"
CAPTURE_ENV = "TEXTGEN_ARGOCD_CAPTURE"


def argocd_lua() -> Path:
    """The argocd-lua binary hack/build-tools.sh builds (seconds; the e2e fixture has built the rest already)."""
    found = subprocess.run([str(BUILD_TOOLS), "--print-argocd-bin-dir"], capture_output=True, text=True)
    if found.returncode != 0:
        subprocess.run([str(BUILD_TOOLS)], check=True, capture_output=True, timeout=600)
        found = subprocess.run([str(BUILD_TOOLS), "--print-argocd-bin-dir"], capture_output=True, text=True,
                               check=True)
    return Path(found.stdout.strip()) / "argocd-lua"


def evaluate(binary: Path, obj: dict[str, Any]) -> dict[str, str]:
    """health.lua's {status, message} for one object, from Argo CD's runtime."""
    out = subprocess.run([str(binary), "eval", str(HEALTH_LUA)], input=json.dumps(obj), capture_output=True,
                         text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"argocd-lua eval failed ({out.returncode}): {out.stderr.strip()}")
    return dict(json.loads(out.stdout))


def capture_name(stage: str, health: dict[str, str]) -> str:
    """<stage>-<health>-<why>: why is the reason health.lua names first in its message ("WarmingUp",
    "Autoscaling FailedGetExternalMetric"), or unobserved / nostatus for its two waiting messages."""
    message = health.get("message", "")
    if message.startswith("The textgen operator has not observed"):
        why = "unobserved"
    elif message.startswith("Waiting for the textgen operator"):
        why = "nostatus"
    else:
        why = message.split(":", 1)[0]
    return "-".join([stage, health.get("status", "none"), *why.split()]).lower()


def stripped(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as a test fixture: no managedFields (server bookkeeping, long and irrelevant to health)."""
    body = json.loads(json.dumps(obj))
    body["metadata"].pop("managedFields", None)
    return dict(body)


@dataclass(frozen=True)
class Seen:
    t: float                  # time.monotonic()
    stage: str                # the test step in force when this version arrived
    generation: int
    observed: int | None      # status.observedGeneration
    health: dict[str, str]


class HealthWatch:
    """Watches one TGS in a thread; each version's health is appended to `seen`."""

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.cluster, self.namespace, self.name = cluster, namespace, name
        self.binary = argocd_lua()
        self.stage, self.generation = "create", 1
        self.seen: list[Seen] = []
        self.errors: list[BaseException] = []
        capture = os.environ.get(CAPTURE_ENV)
        self.capture_dir = Path(capture) if capture else None
        self._captured: set[str] = set()
        self._watch = kubernetes.watch.Watch()
        self._resource_version = ""
        self._thread = threading.Thread(target=self._run, name="argocd-health-watch", daemon=True)

    def begin(self, stage: str, generation: int) -> None:
        """Versions from now on belong to `stage`; those of `generation` and later are its own (a late version
        of the previous spec is recorded in `seen` but not captured)."""
        self.stage, self.generation = stage, generation

    def __enter__(self) -> HealthWatch:
        # The watch starts from a list's resourceVersion, taken before the test applies anything: started "from
        # now" instead, a loaded machine could establish it after the operator's first status write, and the
        # object's first (unobserved) version would never be delivered.
        listed = self._api().list_namespaced_custom_object("textgen.dev", "v1alpha1", self.namespace,
                                                           "textgenerationservices",
                                                           field_selector=f"metadata.name={self.name}")
        for obj in listed.get("items", []):
            self._record(obj)
        self._resource_version = listed["metadata"]["resourceVersion"]
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._watch.stop()
        self._thread.join(timeout=30)

    def _api(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.cluster.api_client())

    def _run(self) -> None:
        try:
            for event in self._watch.stream(self._api().list_namespaced_custom_object, "textgen.dev", "v1alpha1",
                                            self.namespace, "textgenerationservices",
                                            field_selector=f"metadata.name={self.name}", timeout_seconds=900,
                                            resource_version=self._resource_version):
                if event["type"] in ("ADDED", "MODIFIED"):
                    self._record(event["object"])
        except BaseException as exc:  # noqa: BLE001 - reported by the test (HealthWatch.check)
            self.errors.append(exc)

    def _record(self, obj: dict[str, Any]) -> None:
        health = evaluate(self.binary, obj)
        observed = obj.get("status", {}).get("observedGeneration")
        self.seen.append(Seen(time.monotonic(), self.stage, int(obj["metadata"]["generation"]), observed, health))
        key = capture_name(self.stage, health)
        mine = int(obj["metadata"]["generation"]) >= self.generation
        if self.capture_dir is not None and mine and key not in self._captured:
            self._captured.add(key)
            self.capture_dir.mkdir(parents=True, exist_ok=True)
            (self.capture_dir / f"{key}.yaml").write_text(yaml.safe_dump(stripped(obj), sort_keys=False))

    def own(self) -> list[Seen]:
        """The versions of the current stage's generation or later."""
        if self.errors:
            raise AssertionError(f"the TGS watch failed: {self.errors[0]!r}")
        return [s for s in self.seen if s.stage == self.stage and s.generation >= self.generation]

    def latest(self) -> dict[str, str] | None:
        """The health of the newest version of the current stage's generation or later, or None."""
        found = self.own()
        return found[-1].health if found else None

    def statuses(self) -> list[str]:
        """Health statuses of the current stage's own versions, consecutive repeats folded."""
        out: list[str] = []
        for s in self.own():
            if not out or out[-1] != s.health["status"]:
                out.append(s.health["status"])
        return out
