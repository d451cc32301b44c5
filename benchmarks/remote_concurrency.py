"""How much concurrent requests to a remote server speed a job up; prints one JSON line last.

    python benchmarks/remote_concurrency.py --images 64 --latency 0.1

The fake OpenAI-compatible server of the test suite (a real HTTP server on loopback, run in
its own process so its work does not share the job's interpreter) answers every request
after ``--latency`` seconds. The pipeline is the ``api`` preset with only its remote part:
one ``openai:`` captioner and the ``openai:`` LLM (claims, then one caption style); the
detector, VQA and OCR are off, so nothing local competes with the remote calls. The response
cache is off. Each image costs three requests (caption, claims, compose), each stage of a
batch sends its requests at once, up to ``max_concurrency``.

The job runs with ``max_concurrency`` 1 and ``--batch-size`` (16), then with
``--concurrency`` (16) and the same batch size: ``speedup`` is the ratio of the wall times.
Two more runs show how the batch size bounds what concurrency can do, since the stages of a
batch run one after another: with ``max_concurrency`` 16 and batches of 4 (the default
``batch_size``), at most 4 requests are ever in flight (``speedup_batch_4``); with one batch
of all images, 16 (``speedup_one_batch``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the fake server lives with the tests

MODEL = "openai:Qwen/Qwen2.5-VL-7B-Instruct"
CLAIMS = [
    {"kind": "object", "text": "There is a cat.", "subject": "cat"},
    {"kind": "attribute", "text": "The sofa is red.", "subject": "sofa", "question": "Red?"},
]


def answer(request: dict) -> str:
    """Caption for an image, JSON claims for the claims prompt, a caption otherwise."""
    content = request["messages"][-1]["content"]
    if isinstance(content, list):
        return "A cat on a red sofa."
    if "checkable claims" in request["messages"][0]["content"]:
        return json.dumps(CLAIMS)
    return "A cat rests on a red sofa."


def serve(latency: float, conn: Any) -> None:
    """Child process: run the fake server, send its URL, report the stats when asked."""
    from fake_openai import FakeOpenAIServer

    with FakeOpenAIServer(answer, delay=latency) as server:
        conn.send(server.base_url)
        while True:
            if conn.recv() == "stop":
                break
            conn.send({"requests": len(server.completions), "max_in_flight": server.max_in_flight})
            server.requests.clear()
            server.max_in_flight = 0


def run(base_url: str, images: list, concurrency: int, batch_size: int, conn: Any) -> dict:
    from factcap.pipeline import Pipeline

    remote = {"cache": False}
    pipe = Pipeline.from_preset(
        "api",
        captioners=[{"model": MODEL, "options": {"max_new_tokens": 64, **remote}}],
        llm={"options": remote},
        detector=None,
        vqa=None,
        ocr=None,
        batch_size=batch_size,
        styles=["detailed"],
        openai={"base_url": base_url, "max_concurrency": concurrency, "max_retries": 0},
    ).load()
    conn.send("stats")
    conn.recv()  # reset the counters
    start = time.perf_counter()
    records = pipe.caption(images)
    wall = time.perf_counter() - start
    conn.send("stats")
    stats = conn.recv()
    bad = [r.error for r in records if r.status != "ok"]
    if bad:
        raise SystemExit(f"{len(bad)} records failed, e.g. {bad[0]}")
    return {"wall_s": round(wall, 3), **stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per request")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    from PIL import Image

    from factcap.examples import example_paths

    photos = [Image.open(p).convert("RGB") for p in example_paths()]
    # distinct 256 px crops: every request differs, as in a real dataset
    images = [
        photos[i % len(photos)].crop((i, 0, i + 256, 256)).resize((256, 256))
        for i in range(args.images)
    ]

    parent, child = mp.get_context("spawn").Pipe()
    server = mp.get_context("spawn").Process(target=serve, args=(args.latency, child))
    server.start()
    try:
        base_url = parent.recv()
        run(base_url, images[:4], args.concurrency, 4, parent)  # warm-up, not counted
        serial = run(base_url, images, 1, args.batch_size, parent)
        concurrent = run(base_url, images, args.concurrency, args.batch_size, parent)
        small = run(base_url, images, args.concurrency, 4, parent)
        whole = run(base_url, images, args.concurrency, len(images), parent)
    finally:
        parent.send("stop")
        server.join(timeout=10)

    ideal = serial["requests"] * args.latency
    print(
        json.dumps(
            {
                "benchmark": "remote_concurrency",
                "images": args.images,
                "latency_s": args.latency,
                "requests_per_run": serial["requests"],
                "roles": "captioner + llm over openai:, detector/vqa/ocr off, cache off",
                "concurrency": args.concurrency,
                "batch_size": args.batch_size,
                "serial_s": serial["wall_s"],
                "serial_ideal_s": round(ideal, 3),
                "concurrent_s": concurrent["wall_s"],
                "max_in_flight": concurrent["max_in_flight"],
                "batch_4_s": small["wall_s"],
                "one_batch_s": whole["wall_s"],
                "speedup_batch_4": round(serial["wall_s"] / small["wall_s"], 2),
                "speedup_one_batch": round(serial["wall_s"] / whole["wall_s"], 2),
                "machine": f"{platform.machine()} {os.cpu_count()} cpus, python "
                f"{platform.python_version()}",
                "date": time.strftime("%Y-%m-%d"),
                "speedup": round(serial["wall_s"] / concurrent["wall_s"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
