"""Command lines that run a container's process, its exec probes and its preStop hook. Pure builders.

A container: nsenter into the pod's network and mount namespaces, unshare a mount namespace of its own, bind
its volumes at their mountPaths (read-only where asked, and / read-only with readOnlyRootFilesystem), cd to
workingDir, drop to runAsUser/runAsGroup (+ fsGroup, supplementalGroups) with setpriv, exec the command. No
fork on the way: the pid the agent gets is the container's main process, which alone receives SIGTERM.
"""
from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textgen_node_agent.envs import ContainerConfigError


# The "image": what every container runs from. The checkout (the venv's editable install imports from it, and its
# .venv link lives there), the venv itself and its base Python; the agent runs from the same venv as its pods.
IMAGE_PATHS: tuple[Path, ...] = tuple(dict.fromkeys(
    (Path(__file__).resolve().parents[3], Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve())))
FIRST_IMAGE_FD = 30   # fds the container script holds its image paths open on (above bash's 0-9 and the ready fd)


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: tuple[int, ...]

    def setpriv(self) -> list[str]:
        if self.uid == 0 and self.gid == 0 and not self.groups:
            return []
        groups = f"--groups={','.join(map(str, self.groups))}" if self.groups else "--clear-groups"
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", groups, "--"]

    @property
    def home(self) -> str:
        return "/root" if self.uid == 0 else "/"   # what a runtime sets for a user without a passwd entry


def build_identity(pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> Identity:
    """runAsUser/runAsGroup (container over pod), fsGroup and supplementalGroups; runAsNonRoot enforced."""
    pod_sc, sc = pod_spec.get("securityContext") or {}, container.get("securityContext") or {}
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) and not uid:
        # No image to read a USER from: the kubelet's check against an image running as root.
        raise ContainerConfigError("container has runAsNonRoot and image will run as root (set runAsUser)")
    groups = [g for g in [pod_sc.get("fsGroup"), *(pod_sc.get("supplementalGroups") or [])] if g is not None]
    return Identity(int(uid or 0), int(gid if gid is not None else (uid or 0)), tuple(int(g) for g in groups))


def _mount_order(container: Mapping[str, Any], volume_paths: Mapping[str, Path]) -> list[Mapping[str, Any]]:
    """Parents before children (as runtimes sort them), and a mount that would hide a volume's source on the host
    (a /tmp emptyDir over a state dir under /tmp) after every other."""
    mounts = list(container.get("volumeMounts") or [])
    sources = [str(volume_paths.get(m["name"], "")) for m in mounts]

    def hides_source(mount: Mapping[str, Any]) -> bool:
        target = mount["mountPath"].rstrip("/") + "/"
        return any(source.startswith(target) for source in sources)

    return sorted(mounts, key=lambda m: (hides_source(m), m["mountPath"].rstrip("/").count("/")))


def _mount_lines(container: Mapping[str, Any], volume_paths: Mapping[str, Path]) -> list[str]:
    lines = []
    for mount in _mount_order(container, volume_paths):
        if mount["name"] not in volume_paths:
            raise ContainerConfigError(f"volumeMount {mount['name']!r} names no volume of the pod")
        source = volume_paths[mount["name"]] / mount.get("subPath", "")
        target = shlex.quote(mount["mountPath"])
        if source.is_file():
            lines.append(f"mkdir -p $(dirname {target}) && {{ [ -e {target} ] || touch {target}; }}")
        else:
            source.mkdir(parents=True, exist_ok=True)
            lines.append(f"mkdir -p {target}")
        lines.append(f"mount --bind {shlex.quote(str(source))} {target}")
        if mount.get("readOnly"):
            lines.append(f"mount -o remount,bind,ro {target}")
    return lines


def _image_lines(container: Mapping[str, Any], image_paths: Sequence[Path]) -> tuple[list[str], list[str]]:
    """(before, after) the volume mounts: an image path that a volume's mountPath would hide (a checkout under
    /tmp, with the /tmp emptyDir every operator pod has) is held open before the mounts and bound back from
    that descriptor after them, so the container still finds its command, as it would in its image."""
    targets = [m["mountPath"].rstrip("/") + "/" for m in container.get("volumeMounts") or []]
    hidden = [p for p in image_paths if any((str(p) + "/").startswith(t) for t in targets)]
    before = [f"exec {FIRST_IMAGE_FD + i}<{shlex.quote(str(p))}" for i, p in enumerate(hidden)]
    after = []
    for i, path in enumerate(hidden):
        target = shlex.quote(str(path))
        # --no-canonicalize: mount(8) would otherwise resolve the descriptor to its (now hidden) path name.
        after += [f"mkdir -p {target}",
                  f"mount --no-canonicalize --bind /proc/$$/fd/{FIRST_IMAGE_FD + i} {target}",
                  f"exec {FIRST_IMAGE_FD + i}<&-"]
    return before, after


def build_container_argv(nsenter: list[str], container: Mapping[str, Any], volume_paths: Mapping[str, Path],
                         identity: Identity, argv: list[str], ready_fd: int | None = None,
                         image_paths: Sequence[Path] = IMAGE_PATHS) -> list[str]:
    """The full command line of a container's main process. `ready_fd` (inherited) is closed right before the
    exec: its reader sees EOF once the mounts are in place, so hooks and exec probes enter the finished
    container, never the half-built one."""
    image_before, image_after = _image_lines(container, image_paths)
    lines = ["set -e", *image_before, *_mount_lines(container, volume_paths), *image_after]
    if (container.get("securityContext") or {}).get("readOnlyRootFilesystem"):
        lines.append("mount -o remount,bind,ro /")
    lines.append(f"cd {shlex.quote(container.get('workingDir') or '/')}")
    if ready_fd is not None:
        lines.append(f"exec {ready_fd}>&-")
    lines.append('exec "$@"')
    script = "\n".join(lines)
    return [*nsenter, "unshare", "--mount", "--propagation", "private", "--",
            "/bin/bash", "-c", script, container["name"], *identity.setpriv(), *argv]  # bash: fds above 9


def build_exec_argv(container_pid: int, identity: Identity, command: list[str]) -> list[str]:
    """An exec probe or hook: inside the running container's namespaces, as its user."""
    return ["nsenter", "-t", str(container_pid), "--net", "--mount", "--wd", "--", *identity.setpriv(), *command]
