"""Time ``clip_score`` batched against a per-item loop on the tiny CLIP; prints one JSON line last.

    python benchmarks/clip_score.py --pairs 1000 --batch-size 64

Scores ``--pairs`` image-caption pairs (the bundled photos in turn, each pair with its own
caption; every ``--long-every``-th caption is over CLIP's 77 tokens, so it is split) twice
with the same model: once as one ``ClipScore.score`` call over all samples (texts embedded
``--batch-size`` at a time, each image once), once calling ``score`` for one sample at a time.
Both start from empty image caches; the model is built and warmed up before either is timed.
``speedup`` is loop time / batched time; ``max_abs_diff`` checks both give the same scores.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

COLOURS = ["red", "blue", "grey", "white", "black", "green", "golden", "brown", "pale", "dark"]
THINGS = ["cat", "astronaut", "rocket", "cup of coffee", "camera", "man", "flag", "helmet"]
PLACES = ["on a table", "in a studio", "outdoors", "on a launch pad", "near a window"]
DETAIL = (
    " The light comes from the left and casts a soft shadow. In the background there is a "
    "blurred wall with a poster, a shelf with books and a small plant in a clay pot. "
    "The photo is sharp and the colours look natural."
)


def captions(n: int, long_every: int) -> list[str]:
    """``n`` distinct captions; every ``long_every``-th one long enough to be split."""
    combos = itertools.cycle(itertools.product(COLOURS, THINGS, PLACES))
    out = []
    for i in range(n):
        colour, thing, place = next(combos)
        text = f"a {colour} {thing} {place}, photo {i}."
        out.append(text + DETAIL if long_every and i % long_every == 0 else text)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--long-every", type=int, default=10)
    args = parser.parse_args()

    import numpy as np

    from factcap.backends import registry
    from factcap.examples import example_paths
    from factcap.metrics import Sample
    from factcap.metrics.clip_score import ClipScore
    from factcap.metrics.resources import Resources

    photos = [str(p) for p in example_paths()]
    texts = captions(args.pairs, args.long_every)
    samples = [
        Sample(str(i), photos[i % len(photos)], "final:detailed", text)
        for i, text in enumerate(texts)
    ]

    start = time.perf_counter()
    clip = registry.build("embedder", "tiny:clip")
    build_s = time.perf_counter() - start
    metric = ClipScore()

    def fresh() -> Resources:
        return Resources({"embedder": lambda: clip}, batch_size=args.batch_size)

    metric.score(samples[:20], fresh())  # warm-up, not counted

    start = time.perf_counter()
    batched = metric.score(samples, fresh())
    batched_s = time.perf_counter() - start

    start = time.perf_counter()
    resources = fresh()
    looped = [metric.score([s], resources)[0] for s in samples]
    loop_s = time.perf_counter() - start

    a = np.array([s.values["clip_score"] for s in batched])
    b = np.array([s.values["clip_score"] for s in looped])
    print(
        json.dumps(
            {
                "benchmark": "clip_score",
                "model": "tiny:clip",
                "pairs": len(samples),
                "images": len(photos),
                "split_captions": sum(bool(s.info["clip_split"]) for s in batched),
                "pieces": sum(int(s.info["clip_windows"]) for s in batched),
                "batch_size": args.batch_size,
                "model_build_s": round(build_s, 2),
                "batched_s": round(batched_s, 3),
                "loop_s": round(loop_s, 3),
                "speedup": round(loop_s / batched_s, 2),
                "max_abs_diff": float(np.abs(a - b).max()),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                f"torch threads {__import__('torch').get_num_threads()}, "
                f"{platform.python_version()}",
            }
        )
    )


if __name__ == "__main__":
    main()
