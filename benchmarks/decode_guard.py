"""How fast the decoder refuses a decompression bomb from its header; prints one JSON line last.

    python benchmarks/decode_guard.py --runs 20

Decodes, ``--runs`` times, a PNG whose header claims 100,000 x 100,000 RGB pixels (30 GB once
decoded) but holds no pixel data, and reports how long ``factcap.images.decode`` takes to
refuse it (``DecompressionBomb``) and how much the process's peak RSS grew meanwhile. The test
suite checks that no pixel buffer is made; this measures the time. Target: ``max_s`` < 1.0
and ``peak_rss_growth_mb`` < 50.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import struct
import time
import zlib


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature, an IHDR chunk claiming width x height RGB, and IEND: no pixel data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    from factcap.errors import ImageError
    from factcap.images import decode

    bomb = png_header_only(100_000, 100_000)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    seconds: list[float] = []
    kinds: set[str] = set()
    for _ in range(args.runs):
        start = time.perf_counter()
        try:
            decode(bomb)
            kinds.add("decoded")
        except ImageError as err:
            kinds.add(err.kind)
        seconds.append(time.perf_counter() - start)
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    print(
        json.dumps(
            {
                "benchmark": "decode_guard",
                "claimed_pixels": 100_000 * 100_000,
                "runs": args.runs,
                "outcome": sorted(kinds),
                "median_s": round(statistics.median(seconds), 4),
                "max_s": round(max(seconds), 4),
                "peak_rss_growth_mb": round(growth_mb, 1),
                "target": "max_s < 1.0, peak_rss_growth_mb < 50",
                "ok": kinds == {"DecompressionBomb"} and max(seconds) < 1.0 and growth_mb < 50,
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
            }
        )
    )


if __name__ == "__main__":
    main()
