"""A pod's sandbox: its own network namespace (only `lo`, up: every 127/8 address in it is the pod's own) and a
mount namespace holding its memory-backed emptyDirs, kept alive by a `sleep` process as the pause container.

Containers join both namespaces (nsenter) and get a mount namespace of their own on top (unshare) where their
volumes are bind-mounted at their mountPaths. Sockets for probes and the port forwarder are created inside the
pod's network namespace with setns(2) on the calling thread, then used from anywhere: a socket stays in the
namespace it was created in.
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import shlex
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_HOST_NETNS = os.open("/proc/self/ns/net", os.O_RDONLY)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@dataclass(frozen=True)
class TmpfsMount:
    path: Path
    size_bytes: int | None


def build_sandbox_script(tmpfs: list[TmpfsMount], sysctls: dict[str, str]) -> str:
    """The pause container's shell: lo up, namespaced net.* sysctls, tmpfs emptyDirs, then sleep forever."""
    lines = ["set -e", "ip link set lo up"]
    for name, value in sysctls.items():
        lines.append(f"echo {shlex.quote(value)} > /proc/sys/{name.replace('.', '/')}")
    for mount in tmpfs:
        size = f",size={mount.size_bytes}" if mount.size_bytes else ""
        lines.append(f"mount -t tmpfs -o mode=1777{size} tmpfs {shlex.quote(str(mount.path))}")
    lines += ["echo ready", "exec sleep infinity"]
    return "\n".join(lines)


class Sandbox:
    """The namespaces of one pod, alive while its pause process runs."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pid = process.pid

    @classmethod
    async def start(cls, tmpfs: list[TmpfsMount], sysctls: dict[str, str]) -> Sandbox:
        for name in sysctls:
            if not name.startswith("net."):
                raise ValueError(f"sysctl {name} is not namespaced per pod by the node agent (only net.*)")
        process = await asyncio.create_subprocess_exec(
            "unshare", "--net", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
            build_sandbox_script(tmpfs, sysctls),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        assert process.stdout is not None
        line = await process.stdout.readline()
        if line.strip() != b"ready":
            rest = await process.stdout.read()
            await process.wait()
            raise RuntimeError(f"pod sandbox failed: {(line + rest).decode(errors='replace').strip()}")
        return cls(process)

    def nsenter_prefix(self) -> list[str]:
        return ["nsenter", f"--net=/proc/{self.pid}/ns/net", f"--mount=/proc/{self.pid}/ns/mnt", "--"]

    def socket(self, family: int = socket.AF_INET) -> socket.socket:
        """A TCP socket in the pod's network namespace (127.0.0.1 there is the pod itself)."""
        fd = os.open(f"/proc/{self.pid}/ns/net", os.O_RDONLY)
        try:
            _setns(fd)
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            finally:
                _setns(_HOST_NETNS)
        finally:
            os.close(fd)
        sock.setblocking(False)
        return sock

    def netns_inode(self) -> int:
        return os.stat(f"/proc/{self.pid}/ns/net").st_ino

    async def stop(self) -> None:
        """SIGKILL to every process still in the pod's network namespace, then to the pause process."""
        try:
            inode = self.netns_inode()
        except FileNotFoundError:
            inode = None
        if inode is not None:
            for pid in pids_in_netns(inode):
                if pid != self.pid:
                    _kill(pid)
        _kill(self.pid)
        await self.process.wait()


def pids_in_netns(inode: int) -> list[int]:
    """Processes whose network namespace is `inode` (a container's strays: its children that outlived it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.stat(entry / "ns" / "net").st_ino == inode:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
