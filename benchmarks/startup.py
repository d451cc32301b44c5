"""How fast ``factcap --help`` answers from a cold interpreter; prints one JSON line last.

    python benchmarks/startup.py --runs 5

Runs ``python -c "from factcap.cli import main; main(['--help'])"`` ``--runs`` times, each in a
fresh interpreter (so nothing is imported yet), timing each from the start of the import to
the help being printed (interpreter start-up excluded). Also says whether torch or
transformers got imported on the way (the test suite checks that they are not; this measures
the time). Target: ``median_s`` < 1.0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

CODE = """\
import sys, time
start = time.perf_counter()
from factcap.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
heavy = [m for m in ("torch", "transformers") if m in sys.modules]
print("RESULT", time.perf_counter() - start, " ".join(heavy) or "-")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    seconds: list[float] = []
    heavy: set[str] = set()
    for _ in range(args.runs):
        out = subprocess.run(
            [sys.executable, "-c", CODE], capture_output=True, text=True, check=True, env=env
        ).stdout
        _, took, imported = out.splitlines()[-1].split(" ", 2)
        seconds.append(float(took))
        heavy |= set(imported.split()) - {"-"}
    median = statistics.median(seconds)
    print(
        json.dumps(
            {
                "benchmark": "startup",
                "command": "factcap --help",
                "runs": args.runs,
                "median_s": round(median, 3),
                "max_s": round(max(seconds), 3),
                "heavy_imports": sorted(heavy),
                "target_s": 1.0,
                "ok": median < 1.0 and not heavy,
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
            }
        )
    )


if __name__ == "__main__":
    main()
