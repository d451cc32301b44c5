"""Engine memory: RSS growth between the 1,000th and the last of 5,000 images.

    python benchmarks/memory.py --images 5000

By default the model roles are instant in-process fakes (fixed caption, fixed claims JSON,
one box, P(yes)=0.9): what is measured is everything else, for real — the streamed source,
safe decoding, the pipeline's parsing/verification/composition, the executor's queues and
the JSONL sink. ``--tiny`` runs the tiny preset's real models instead (OCR off; about 7
minutes for 5,000 images on 2 cores). Prints ONE JSON line last; ``rss_growth_mb`` target:
<= 100.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from factcap.roles import Detection

CLAIMS = json.dumps(
    [
        {"kind": "object", "text": "There is a box.", "subject": "box"},
        {
            "kind": "attribute",
            "text": "The box is white.",
            "subject": "box",
            "question": "Is the box white?",
        },
    ]
)


class FakeCaptioner:
    name = "fake:captioner"

    def caption(self, images, prompt=None):
        return ["A white box on a coloured background."] * len(images)


class FakeLLM:
    name = "fake:llm"

    def chat(self, conversations, max_new_tokens=256, temperature=0.0):
        return [
            CLAIMS if "checkable claims" in c[0]["content"] else "A white box."
            for c in conversations
        ]


class FakeDetector:
    name = "fake:detector"

    def detect(self, images, queries):
        return [[Detection(q, 0.9, (1.0, 1.0, 9.0, 9.0)) for q in qs] for qs in queries]


class FakeVQA:
    name = "fake:vqa"

    def yes_probability(self, images, questions):
        return [0.9] * len(questions)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tiny", action="store_true", help="real tiny models, not fakes")
    args = parser.parse_args()

    from _images import make_images

    from factcap.config import load_config
    from factcap.engine import open_sink, open_source
    from factcap.engine.executor import run_job
    from factcap.pipeline import Pipeline
    from factcap.pipeline.models import Models

    tmp = Path(tempfile.mkdtemp())
    make_images(tmp / "imgs", args.images)
    config = load_config(preset="tiny", overrides={"batch_size": args.batch_size, "ocr": None})
    models = (
        None
        if args.tiny
        else Models(
            config,
            built={
                "captioner:0": (FakeCaptioner(), args.batch_size),
                "llm": (FakeLLM(), args.batch_size),
                "detector": (FakeDetector(), args.batch_size),
                "vqa": (FakeVQA(), args.batch_size),
            },
        )
    )
    pipeline = Pipeline(config, models=models).load()
    marks: dict[int, float] = {}
    count = 0

    def on_record(record) -> None:
        nonlocal count
        count += 1
        if count in (1, 1000, args.images):
            marks[count] = rss_mb()

    start = time.perf_counter()
    with open_sink(tmp / "out.jsonl", "jsonl") as sink:
        run_job(pipeline, open_source([str(tmp / "imgs")]), sink, on_record=on_record)
    wall = time.perf_counter() - start
    print(
        json.dumps(
            {
                "benchmark": "memory",
                "preset": "tiny, OCR off" + ("" if args.tiny else ", instant fake model roles"),
                "images": count,
                "wall_s": round(wall, 1),
                "rss_mb_at_1": round(marks.get(1, 0), 1),
                "rss_mb_at_1000": round(marks.get(1000, 0), 1),
                "rss_mb_at_last": round(marks.get(args.images, 0), 1),
                "rss_growth_mb": round(marks.get(args.images, 0) - marks.get(1000, 0), 1),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
            }
        )
    )


if __name__ == "__main__":
    main()
