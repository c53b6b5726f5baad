"""The HTTP floor for bench/serving.py's overhead figure: plain uvicorn, no Ray Serve.

An ASGI app that reads the whole request body and answers a small JSON body with
`Server-Timing: app;dur=<its own time>`, as the gateway does. Under the same locust client, its
round trip minus that time is what the loopback HTTP exchange and the client cost on this
machine; Serve's overhead beyond it is what the proxy and the routing to the ingress add.

    python bench/serving_floor.py PORT
"""

from __future__ import annotations

import sys
import time

import uvicorn
from starlette.types import Receive, Scope, Send


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    started = time.perf_counter()
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    body = b'{"detections": []}'
    elapsed_ms = (time.perf_counter() - started) * 1000
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"server-timing", f"app;dur={elapsed_ms:.3f}".encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    # One worker, uvloop and httptools when installed: as Serve's proxy runs uvicorn.
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False)  # fmt: skip
