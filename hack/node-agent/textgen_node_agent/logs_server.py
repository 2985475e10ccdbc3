"""The kubelet's log endpoint, so `kubectl logs` works for agent pods: the API server proxies
GET /containerLogs/<namespace>/<pod>/<container> to the node's kubeletEndpoint (127.0.0.1:<port>, HTTPS).

Served from the files in <state>/pods/; supports tailLines, limitBytes, previous and follow. Listens on
127.0.0.1 only. Client certificates are not checked (anything on this machine may read pod logs).
"""
from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

# (namespace, pod name) -> that pod's directory and its containers' restart counts, or None
FindPod = Callable[[str, str], tuple[Path, dict[str, int], Callable[[], bool]] | None]


def pick_log(pod_dir: Path, container: str, restarts: int, previous: bool) -> Path | None:
    number = restarts - 1 if previous else restarts
    path = pod_dir / container / f"{number}.log"
    return path if number >= 0 and path.exists() else None


def tail(data: bytes, num_lines: int | None, limit_bytes: int | None) -> bytes:
    if num_lines is not None:
        data = b"".join(data.splitlines(keepends=True)[-num_lines:]) if num_lines > 0 else b""
    return data[:limit_bytes] if limit_bytes is not None else data


def build_app(find_pod: FindPod) -> web.Application:
    async def container_logs(request: web.Request) -> web.StreamResponse:
        info = request.match_info
        found = find_pod(info["namespace"], info["pod"])
        if found is None:
            raise web.HTTPNotFound(text=f"pod {info['namespace']}/{info['pod']} is not on this node agent")
        pod_dir, restarts, running = found
        if info["container"] not in restarts:
            raise web.HTTPNotFound(text=f"container {info['container']!r} is not in pod {info['pod']}")
        query = request.query
        log = pick_log(pod_dir, info["container"], restarts[info["container"]], query.get("previous") == "true")
        if log is None:
            raise web.HTTPBadRequest(text=f"previous terminated container {info['container']!r} not found"
                                     if query.get("previous") == "true" else "container has not started yet")
        num_lines = int(query["tailLines"]) if "tailLines" in query else None
        limit = int(query["limitBytes"]) if "limitBytes" in query else None
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        with log.open("rb") as f:
            await response.write(tail(f.read(), num_lines, limit))
            while query.get("follow") == "true" and running():
                chunk = f.read()
                if chunk:
                    await response.write(chunk)
                else:
                    await asyncio.sleep(0.2)
        return response

    app = web.Application()
    app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", container_logs)
    return app


async def serve_logs(find_pod: FindPod, port: int, cert: Path, key: Path) -> web.AppRunner:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    runner = web.AppRunner(build_app(find_pod), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    return runner
