"""A pod's volumes on the host: one directory per volume under the pod's directory (emptyDir, configMap,
secret, downwardAPI, projected), a claim's directory for a PersistentVolumeClaim (made by provisioner.py), and
hostPath as is. Memory-backed emptyDirs become tmpfs mounts inside the pod's mount namespace (sandbox.py).

Contents of configMap/secret/projected volumes are written once when the pod starts (no live updates; the
ServiceAccount token is not refreshed: see the README).
"""
from __future__ import annotations

import base64
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textgen_node_agent.envs import ContainerConfigError, field_ref
from textgen_node_agent.quantity import parse_quantity
from textgen_node_agent.sandbox import TmpfsMount

# (kind, name) -> the object's data as {key: bytes}, or None when missing; kind: secret | configmap
FetchData = Callable[[str, str], Awaitable[Mapping[str, bytes] | None]]
FetchClaimPath = Callable[[str], Awaitable[Path]]          # claim name -> its bound volume's directory
FetchToken = Callable[[Mapping[str, Any]], Awaitable[str]]  # serviceAccountToken projection -> a token


@dataclass
class PodVolumes:
    paths: dict[str, Path] = field(default_factory=dict)      # volume name -> host directory (or file)
    tmpfs: list[TmpfsMount] = field(default_factory=list)


@dataclass(frozen=True)
class Fetchers:
    data: FetchData
    claim_path: FetchClaimPath
    token: FetchToken


def _write_files(target: Path, files: Mapping[str, bytes], mode: int) -> None:
    target.mkdir(parents=True, exist_ok=True)
    os.chmod(target, 0o755)
    for rel, content in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.chmod(path, mode)


def _select(data: Mapping[str, bytes], items: list[Mapping[str, Any]] | None, what: str) -> dict[str, bytes]:
    if not items:
        return dict(data)
    missing = [i["key"] for i in items if i["key"] not in data]
    if missing:
        raise ContainerConfigError(f"{what}: no key {missing[0]!r}")
    return {i["path"]: data[i["key"]] for i in items}


async def _source_files(source: Mapping[str, Any], pod: Mapping[str, Any], fetch: Fetchers) -> dict[str, bytes]:
    """Files of one configMap/secret/downwardAPI/serviceAccountToken source (a volume or a projection)."""
    for kind, key in (("configmap", "configMap"), ("secret", "secret")):
        if key in source:
            ref = source[key]
            name = ref.get("name") or ref.get("secretName")
            data = await fetch.data(kind, name)
            if data is None:
                if ref.get("optional"):
                    return {}
                raise ContainerConfigError(f'{kind} "{name}" not found')
            return _select(data, ref.get("items"), f'{kind} "{name}"')
    if "downwardAPI" in source:
        return {i["path"]: field_ref(pod, i["fieldRef"]["fieldPath"]).encode()
                for i in source["downwardAPI"].get("items", [])}
    if "serviceAccountToken" in source:
        return {source["serviceAccountToken"]["path"]: (await fetch.token(source["serviceAccountToken"])).encode()}
    raise ContainerConfigError(f"volume source {sorted(source)} is not supported by the node agent")


async def _prepare_one(volume: Mapping[str, Any], pod: Mapping[str, Any], pod_dir: Path, fetch: Fetchers,
                       out: PodVolumes) -> None:
    name = volume["name"]
    target = pod_dir / "volumes" / name
    if "emptyDir" in volume:
        target.mkdir(parents=True, exist_ok=True)
        os.chmod(target, 0o777)   # the kubelet's mode for emptyDir: any runAsUser can write
        spec = volume["emptyDir"] or {}
        # HugePages media become plain memory too: there is no hugetlbfs per pod here (README, Limits).
        if spec.get("medium") == "Memory" or str(spec.get("medium", "")).startswith("HugePages"):
            size = spec.get("sizeLimit")
            out.tmpfs.append(TmpfsMount(target, parse_quantity(size) if size else None))
        out.paths[name] = target
    elif "persistentVolumeClaim" in volume:
        out.paths[name] = await fetch.claim_path(volume["persistentVolumeClaim"]["claimName"])
    elif "hostPath" in volume:
        path = Path(volume["hostPath"]["path"])
        if volume["hostPath"].get("type") in ("DirectoryOrCreate",):
            path.mkdir(parents=True, exist_ok=True)
        out.paths[name] = path
    elif "projected" in volume:
        files: dict[str, bytes] = {}
        for source in volume["projected"].get("sources", []):
            files.update(await _source_files(source, pod, fetch))
        _write_files(target, files, volume["projected"].get("defaultMode", 0o644))
        out.paths[name] = target
    else:
        source = {k: v for k, v in volume.items() if k != "name"}
        kind = next(iter(source), "?")
        files = await _source_files(source, pod, fetch)
        _write_files(target, files, (source.get(kind) or {}).get("defaultMode", 0o644))
        out.paths[name] = target


async def prepare_volumes(pod: Mapping[str, Any], pod_dir: Path, fetch: Fetchers) -> PodVolumes:
    """Every volume of the pod on the host; ContainerConfigError (kubelet: FailedMount) when one cannot be."""
    out = PodVolumes()
    for volume in pod["spec"].get("volumes") or []:
        await _prepare_one(volume, pod, pod_dir, fetch, out)
    return out


def decode_secret(data: Mapping[str, str] | None) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (data or {}).items()}
