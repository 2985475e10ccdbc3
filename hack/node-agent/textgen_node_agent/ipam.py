"""Loopback pod IPs: one per pod from the agent's range, never one another process already listens on."""
from __future__ import annotations

import ipaddress
import subprocess
import time

SET_ASIDE_SECONDS = 60.0


def listening_addresses() -> set[str]:
    """IPv4 addresses some process listens on (from `ss`), so a pod never gets an address in use."""
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=False).stdout
    found = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            found.add(fields[3].rsplit(":", 1)[0])
    return found


class LoopbackIPAM:
    """Allocates addresses of `cidr` (its network and broadcast addresses excluded) and takes them back."""

    def __init__(self, cidr: ipaddress.IPv4Network) -> None:
        self.cidr = cidr
        self.in_use: dict[str, str] = {}     # ip -> pod uid
        self.set_aside: dict[str, float] = {}  # ip -> until when it is not handed out (a bind failed on it)

    def allocate(self, uid: str) -> str:
        for ip, owner in self.in_use.items():
            if owner == uid:
                return ip
        now = time.monotonic()
        busy = listening_addresses() | {ip for ip, until in self.set_aside.items() if until > now}
        for host in self.cidr.hosts():
            ip = str(host)
            if ip not in self.in_use and ip not in busy:
                self.in_use[ip] = uid
                return ip
        raise RuntimeError(f"no free pod IP left in {self.cidr} ({len(self.in_use)} pods); widen --pod-cidr")

    def release(self, ip: str | None, failed: bool = False) -> None:
        if ip:
            self.in_use.pop(ip, None)
            if failed:
                self.set_aside[ip] = time.monotonic() + SET_ASIDE_SECONDS
