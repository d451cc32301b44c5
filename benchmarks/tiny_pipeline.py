"""Time the tiny preset end to end on the bundled photos; prints one JSON line last.

    python benchmarks/tiny_pipeline.py --images 40 --batch-size 4

Reports seconds per image, how the time splits over the stages (each stage's share of the
summed stage timings), and ``overhead_ratio``: the job's wall time divided by the time spent
inside the stages, measured in the same run. Model building is timed separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import defaultdict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    from PIL import Image

    from factcap.examples import example_paths
    from factcap.pipeline import Pipeline

    photos = [Image.open(p).convert("RGB") for p in example_paths()]
    # distinct crops, so no two inputs share an id (identical inputs are captioned once)
    images = [
        photos[i % len(photos)].crop((i, 0, photos[i % len(photos)].width, 300))
        for i in range(args.images)
    ]

    start = time.perf_counter()
    pipe = Pipeline.from_preset("tiny", batch_size=args.batch_size).load()
    build_s = time.perf_counter() - start
    pipe.caption(images[: args.batch_size])  # warm-up batch, not counted

    start = time.perf_counter()
    records = pipe.caption(images)
    wall = time.perf_counter() - start

    stages: dict[str, float] = defaultdict(float)
    for record in records:
        for stage, ms in record.timings_ms.items():
            stages[stage.split(":")[0]] += ms / 1000.0
    inside = sum(stages.values())
    print(
        json.dumps(
            {
                "benchmark": "tiny_pipeline",
                "images": len(records),
                "ok": sum(r.ok for r in records),
                "batch_size": args.batch_size,
                "model_build_s": round(build_s, 2),
                "wall_s": round(wall, 2),
                "s_per_image": round(wall / len(records), 3),
                "images_per_s": round(len(records) / wall, 2),
                "overhead_ratio": round(wall / inside, 3),
                "stage_share": {k: round(v / inside, 3) for k, v in sorted(stages.items())},
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
            }
        )
    )


if __name__ == "__main__":
    main()
