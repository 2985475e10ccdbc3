"""TCP forwarding from the pod IP on the host to the pod's own network namespace.

For each declared containerPort, the agent listens on <pod IP>:<port> in the host's network namespace and
relays each connection to 127.0.0.1:<port> inside the pod's namespace, where the container bound 0.0.0.0 or
127.0.0.1. Differences from a real pod network (README): only declared containerPorts are reachable from
outside; a closed port inside the pod shows as an accepted connection closed at once, not a refusal; the
peer address the server sees is 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from textgen_node_agent.sandbox import Sandbox

log = logging.getLogger("node-agent.forwarder")
CHUNK = 64 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def _relay(sandbox: Sandbox, port: int, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
    sock = sandbox.socket()
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except OSError:
        sock.close()
        client_w.close()
        return
    pod_r, pod_w = await asyncio.open_connection(sock=sock)
    try:
        await asyncio.gather(_pipe(client_r, pod_w), _pipe(pod_r, client_w))
    finally:
        for w in (pod_w, client_w):
            with contextlib.suppress(Exception):
                w.close()


async def start_forwarders(sandbox: Sandbox, pod_ip: str, ports: list[int]) -> list[asyncio.Server]:
    """One listener per port on pod_ip; raises OSError naming the address when one cannot be bound."""
    servers = []
    for port in sorted(set(ports)):
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter, port: int = port) -> None:
            await _relay(sandbox, port, r, w)
        try:
            servers.append(await asyncio.start_server(handle, pod_ip, port, reuse_address=True))
        except OSError as exc:
            for server in servers:
                server.close()
            raise OSError(exc.errno, f"cannot listen on pod address {pod_ip}:{port}: {exc.strerror}") from exc
    return servers
