"""How long the shapes world's smoke-size captioner takes to train; prints one JSON line last.

    python benchmarks/smoke_training.py --runs 1

Trains the BLIP captioner of ``factcap bench shapes`` at ``--size smoke`` (the size the test
suite trains, for plumbing checks) into a temporary folder ``--runs`` times and reports the
wall time of each :func:`factcap.bench.shapes.train_captioner.train` call (torch is imported
before the clock starts; what ``train`` imports itself counts in the first run). The tests
check what the checkpoint is; this measures how long making it takes. Target: ``max_s`` < 15.
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
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()

    import torch  # noqa: F401 - imported before the clock starts

    from factcap.bench.shapes import train_captioner as tc
    from factcap.bench.shapes.language import CAPTIONERS

    seconds: list[float] = []
    for i in range(args.runs):
        out = Path(tempfile.mkdtemp()) / f"captioner{i}"
        start = time.perf_counter()
        stats = tc.train(
            out, size="smoke", noise=CAPTIONERS["captioner_colour"], log=lambda m: None
        )
        seconds.append(time.perf_counter() - start)
    print(
        json.dumps(
            {
                "benchmark": "smoke_training",
                "model": "shapes captioner (BLIP), size smoke",
                "steps": stats["steps"],
                "runs": args.runs,
                "seconds": [round(s, 2) for s in seconds],
                "max_s": round(max(seconds), 2),
                "target_s": 15,
                "ok": max(seconds) < 15,
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
            }
        )
    )


if __name__ == "__main__":
    main()
