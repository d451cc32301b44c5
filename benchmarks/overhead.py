"""Engine overhead: a whole job's wall time over the time spent inside model calls.

    python benchmarks/overhead.py --images 200

Runs the tiny preset (OCR off, so every stage is a model forward of factcap's backends)
over generated images through the same executor and JSONL sink as ``factcap caption``, and
prints ONE JSON line last: ``overhead_ratio`` = job wall time / sum of the records' model
stage timings (decode excluded: it overlaps with the models in the reader thread).
Target: <= 1.10.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    from _images import make_images

    from factcap.config import load_config
    from factcap.engine import open_sink, open_source
    from factcap.engine.executor import run_job
    from factcap.pipeline import Pipeline

    tmp = Path(tempfile.mkdtemp())
    make_images(tmp / "imgs", args.images)
    config = load_config(preset="tiny", overrides={"ocr": None, "batch_size": args.batch_size})
    pipeline = Pipeline(config).load()
    pipeline.caption([str(p) for p in sorted((tmp / "imgs").iterdir())[:2]])  # warm-up

    out = tmp / "out.jsonl"
    start = time.perf_counter()
    with open_sink(out, "jsonl") as sink:
        written = run_job(pipeline, open_source([str(tmp / "imgs")]), sink)
    wall = time.perf_counter() - start

    model_s = decode_s = 0.0
    for line in out.read_text().splitlines():
        for stage, ms in json.loads(line)["timings_ms"].items():
            if stage == "decode":
                decode_s += ms / 1000
            else:
                model_s += ms / 1000
    print(
        json.dumps(
            {
                "benchmark": "overhead",
                "preset": "tiny (ocr off)",
                "images": written,
                "batch_size": args.batch_size,
                "wall_s": round(wall, 2),
                "model_s": round(model_s, 2),
                "decode_s": round(decode_s, 3),
                "overhead_ratio": round(wall / model_s, 3),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
            }
        )
    )


if __name__ == "__main__":
    main()
