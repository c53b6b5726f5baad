"""Locust users for bench/serving.py: closed-loop clients (no think time) on one route.

The route and where to find payloads / write results come from the environment (set by
bench/serving.py, which runs `locust --headless` once per cell):

    SIGHTLINE_BENCH_ROUTE     detect | otdr | identify | enroll
    SIGHTLINE_BENCH_PAYLOADS  folder with detect.png, trace.json, face.png
    SIGHTLINE_BENCH_OUT       JSON file: one [status, round_trip_ms, app_ms] per request
    SIGHTLINE_API_TOKEN       bearer token for enroll

app_ms is the app's own time from its Server-Timing header (gateway.ServerTiming); null when
absent (e.g. a connection error).
"""

from __future__ import annotations

import io
import json
import os
import re
import time
import uuid
from pathlib import Path

import numpy as np
from locust import FastHttpUser, constant, events, task
from PIL import Image
from urllib3 import encode_multipart_formdata

ROUTE = os.environ["SIGHTLINE_BENCH_ROUTE"]
PAYLOADS = Path(os.environ["SIGHTLINE_BENCH_PAYLOADS"])
OUT = Path(os.environ["SIGHTLINE_BENCH_OUT"])
TOKEN = os.environ.get("SIGHTLINE_API_TOKEN", "")
BODIES = {  # route -> (path, payload file, content type), sent as a raw body
    "detect": ("/v1/detect", "detect.png", "image/png"),
    "otdr": ("/v1/otdr/events", "trace.json", "application/json"),
    "identify": ("/v1/faces/identify", "face.png", "image/png"),
}
APP_TIME = re.compile(r"app;dur=([0-9.]+)")
samples: list[tuple[int, float, float | None]] = []


def random_face_png(rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


class Client(FastHttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.rng = np.random.default_rng(uuid.uuid4().int % 2**32)
        self.prefix = uuid.uuid4().hex[:8]
        self.enrolled = 0
        if ROUTE != "enroll":
            path, name, content_type = BODIES[ROUTE]
            self.request = (path, (PAYLOADS / name).read_bytes(), content_type)

    @task
    def call(self) -> None:
        if ROUTE == "enroll":
            self.enrolled += 1
            identity = f"load-{self.prefix}-{self.enrolled}"
            fields = {"identity": identity, "image": ("face.png", random_face_png(self.rng))}
            body, content_type = encode_multipart_formdata(fields)
            path = "/v1/faces/enroll"
            headers = {"Content-Type": content_type, "Authorization": f"Bearer {TOKEN}"}
        else:
            path, body, content_type = self.request
            headers = {"Content-Type": content_type}
        started = time.perf_counter()
        with self.client.post(path, data=body, headers=headers, catch_response=True) as reply:
            round_trip_ms = (time.perf_counter() - started) * 1000
            timing = APP_TIME.search(reply.headers.get("Server-Timing", "") or "")
            samples.append(
                (reply.status_code, round_trip_ms, float(timing.group(1)) if timing else None)
            )
            if reply.status_code != 200:
                reply.failure(f"HTTP {reply.status_code}")


@events.quitting.add_listener
def write_samples(**_: object) -> None:
    OUT.write_text(json.dumps(samples))
