"""Load test of ``factcap serve`` on loopback; prints one JSON line last.

    python benchmarks/serve_load.py --requests 300 --concurrency 32

Starts the service with the tiny preset (models built once, in this process, served by
uvicorn in a background thread on a port the OS picks), then sends ``--requests`` multipart
uploads of the bundled photos with at most ``--concurrency`` in flight. Only 2xx and 429
answers are allowed (429 means the bounded queue was full: the client would retry); any
other status fails the run. Latency percentiles are over the 2xx answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

KEY = "bench-key"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def load(base: str, photos: list[bytes], n: int, concurrency: int) -> tuple[Counter, list]:
    import httpx

    gate = asyncio.Semaphore(concurrency)
    codes: Counter[int] = Counter()
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:

        async def one(i: int) -> None:
            async with gate:
                start = time.perf_counter()
                r = await client.post(
                    "/v1/captions",
                    headers={"X-API-Key": KEY},
                    files={"image": (f"p{i}.jpg", photos[i % len(photos)], "image/jpeg")},
                )
                codes[r.status_code] += 1
                if 200 <= r.status_code < 300:
                    latencies.append(time.perf_counter() - start)
                    assert r.json()["status"] == "ok", r.text

        await asyncio.gather(*(one(i) for i in range(n)))
    return codes, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--queue-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    from factcap.config import load_config
    from factcap.examples import example_paths
    from factcap.serve.app import create_app, serve_in_thread

    photos = [Path(p).read_bytes() for p in example_paths()]
    config = load_config(preset="tiny", overrides={"batch_size": args.batch_size})
    app = create_app(config, KEY, queue_size=args.queue_size)
    start = time.perf_counter()
    with serve_in_thread(app) as base:
        startup_s = time.perf_counter() - start
        start = time.perf_counter()
        codes, latencies = asyncio.run(load(base, photos, args.requests, args.concurrency))
        wall = time.perf_counter() - start
        batches = list(app.state.batcher.batches)
    bad = {c: k for c, k in codes.items() if not (200 <= c < 300 or c == 429)}
    ok = sum(k for c, k in codes.items() if 200 <= c < 300)
    result = {
        "benchmark": "serve_load",
        "preset": "tiny",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "queue_size": args.queue_size,
        "batch_size": args.batch_size,
        "status_counts": {str(c): k for c, k in sorted(codes.items())},
        "ok": ok,
        "p50_latency_s": round(statistics.median(latencies), 3) if latencies else None,
        "p99_latency_s": round(percentile(latencies, 0.99), 3) if latencies else None,
        "throughput_rps": round(ok / wall, 2),
        "wall_s": round(wall, 2),
        "startup_s": round(startup_s, 2),
        "pipeline_batches": len(batches),
        "mean_batch": round(statistics.mean(batches), 2) if batches else 0,
        "cpu_count": os.cpu_count(),
        "torch_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
    }
    print(json.dumps(result))
    if bad:
        sys.exit(f"unexpected status codes: {bad}")


if __name__ == "__main__":
    main()
