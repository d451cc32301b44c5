"""A simulated human study: does ``factcap study results`` recover a known preference?

    python benchmarks/study_sim.py /tmp/sim --items 200 --raters 5 --raters-per-item 3
    factcap study results /tmp/sim/study

Writes a results file with ``--items`` images (small generated PNGs) captioned by two
sources (``final:detailed`` and ``proposal:m1``), builds the study with ``factcap study
create`` (10 % gold items), and lets scripted raters vote through the study's database
(:func:`factcap.study.simulate.simulate`): each careful rater prefers the detailed caption
70 % of the time, calls them the same 10 % of the time, and gets a gold item right 97 % of
the time; ``rater-04`` answers at random (and should be excluded for failing the gold
items). The recovered win rate's 95 % interval should cover 0.70.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image

from factcap.cli import main
from factcap.study.simulate import simulate
from factcap.study.store import StudyStore


def write_results(folder: Path, n: int) -> Path:
    """A factcap-style results JSONL of ``n`` images with two caption sources."""
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    path = folder / "captions.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            Image.new("RGB", (32, 32), (i % 256, (7 * i) % 256, 90)).save(
                folder / "photos" / f"img{i:04d}.png"
            )
            record = {
                "id": f"img{i:04d}",
                "source": f"photos/img{i:04d}.png",
                "status": "ok",
                "captions": {"detailed": f"A detailed, checked caption of image {i}."},
                "proposals": [{"model": "m1", "text": f"an image {i}"}],
            }
            handle.write(json.dumps(record) + "\n")
    return path


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--raters", type=int, default=5)
    parser.add_argument("--raters-per-item", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = write_results(args.folder, args.items)
    study = args.folder / "study"
    argv = ["study", "create", str(results), "--compare", "final:detailed,proposal:m1"]
    argv += ["-o", str(study), "--raters", str(args.raters), "--overwrite"]
    argv += ["--raters-per-item", str(args.raters_per_item), "--seed", str(args.seed)]
    code = main(argv)
    if code:
        return code
    store = StudyStore.open(study)
    votes = simulate(
        store, {"final:detailed|proposal:m1": (0.7, 0.1)}, careless=["rater-04"], seed=args.seed
    )
    print(f"{votes} simulated votes in {study}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run())
