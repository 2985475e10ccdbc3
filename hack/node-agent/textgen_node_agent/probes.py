"""One probe attempt (httpGet, tcpSocket, exec), as the kubelet's prober makes it.

httpGet and tcpSocket connect from inside the pod's network namespace to 127.0.0.1:<port>, which is what a
kubelet dialling the pod IP reaches; a refused connection is a failure. 2xx and 3xx are success.
"""
from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from textgen_node_agent.sandbox import Sandbox

PROBE_DEFAULTS = {"initialDelaySeconds": 0, "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1,
                  "failureThreshold": 3}


@dataclass(frozen=True)
class ExecTarget:
    """Runs a command inside a container; returns (exit code, output). Set by the container runner."""

    run: Any  # Callable[[list[str], float], Awaitable[tuple[int, str]]]


def setting(probe: Mapping[str, Any], name: str) -> int:
    value = probe.get(name)
    return int(value) if value is not None else PROBE_DEFAULTS[name]


def resolve_port(port: int | str, container: Mapping[str, Any]) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"port {port!r} is not a named port of container {container['name']!r}")


async def _connect(sandbox: Sandbox, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = sandbox.socket()
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


async def _http_get(spec: Mapping[str, Any], port: int, sandbox: Sandbox) -> tuple[bool, str]:
    if spec.get("host"):
        return False, f"httpGet.host {spec['host']!r} is not supported by the node agent (it dials the pod)"
    reader, writer = await _connect(sandbox, port)
    try:
        if spec.get("scheme", "HTTP").upper() == "HTTPS":
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE   # the kubelet does not verify
            await writer.start_tls(context)
        headers = {"Host": f"127.0.0.1:{port}", "User-Agent": "kube-probe/1.36", "Accept": "*/*",
                   "Connection": "close"}
        headers.update({h["name"]: h["value"] for h in spec.get("httpHeaders") or []})
        path = spec.get("path") or "/"
        writer.write(f"GET {path} HTTP/1.1\r\n".encode() + b"".join(
            f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n")
        await writer.drain()
        status_line = (await reader.readline()).decode(errors="replace").strip()
    finally:
        writer.close()
    parts = status_line.split(" ", 2)
    code = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
    if 200 <= code < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {code}" if code else f"bad HTTP answer {status_line!r}"


async def _attempt(probe: Mapping[str, Any], container: Mapping[str, Any], sandbox: Sandbox,
                   exec_target: ExecTarget) -> tuple[bool, str]:
    timeout = setting(probe, "timeoutSeconds")
    if "exec" in probe:
        code, output = await exec_target.run(list(probe["exec"]["command"]), timeout)
        return code == 0, f"command failed with exit code {code}: {output[-200:]}" if code else ""
    if "httpGet" in probe:
        port = resolve_port(probe["httpGet"]["port"], container)
        return await _http_get(probe["httpGet"], port, sandbox)
    if "tcpSocket" in probe:
        _, writer = await _connect(sandbox, resolve_port(probe["tcpSocket"]["port"], container))
        writer.close()
        return True, ""
    return False, f"probe handler {sorted(probe)} is not supported by the node agent (grpc)"


async def probe_once(probe: Mapping[str, Any], container: Mapping[str, Any], sandbox: Sandbox,
                     exec_target: ExecTarget) -> tuple[bool, str]:
    """(success, message) of one attempt, within timeoutSeconds."""
    timeout = setting(probe, "timeoutSeconds")
    try:
        return await asyncio.wait_for(_attempt(probe, container, sandbox, exec_target), timeout + 0.5)
    except asyncio.TimeoutError:
        return False, f"probe timed out after {timeout}s"
    except OSError as exc:
        return False, f"dial tcp: {exc.strerror or exc}"
    except ValueError as exc:
        return False, str(exc)
