"""Timed /generate_stream clients shared by the server benchmarks (hack/bench-server.py, hack/bench-tp.py,
hack/bench-speculation.py).

The client shares the benchmark machine's cores with the server, while a real client runs elsewhere, so it is
kept minimal: one HTTP/1.1 connection per request on asyncio streams, each `data:` line timestamped when it
arrives and checked for an error event by a substring test, nothing parsed. httpx (`aiter_lines` + json.loads per
event) spent about 0.6 ms of CPU per token here, a tenth of the two cores at bench-server's rates, taken from the
server under test; the static transformers baseline it is compared with has no client at all.
"""
from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit


async def stream_all(base_url: str, texts: list[str], output_tokens: int) -> list[list[float]]:
    """All prompts at once; per request: [send time, token 1 time, token 2 time, ...] (perf_counter seconds)."""
    return list(await asyncio.gather(*(stream_one(base_url, text, output_tokens) for text in texts)))


async def stream_one(base_url: str, text: str, output_tokens: int) -> list[float]:
    """One stream of exactly `output_tokens` tokens (EOS ignored); raises on an HTTP error or an error event."""
    url = urlsplit(base_url)
    body = json.dumps({"inputs": text,
                       "parameters": {"max_new_tokens": output_tokens, "ignore_eos_token": True}}).encode()
    request = (f"POST /generate_stream HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    times = [time.perf_counter()]
    reader, writer = await asyncio.open_connection(url.hostname, url.port, limit=1 << 20)
    try:
        writer.write(request)
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"/generate_stream answered {status!r}: {await reader.read()!r}")
        # The body is chunked; each event is one chunk, so a `data:` line is whole. Size lines and blank lines
        # between events are skipped.
        async for line in reader:
            if line.startswith(b"data:"):
                if b'"error"' in line:
                    raise RuntimeError(line.decode(errors="replace"))
                times.append(time.perf_counter())
    finally:
        writer.close()
    return times
