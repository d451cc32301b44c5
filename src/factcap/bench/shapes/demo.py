"""The demo's stories: scenes where a captioner named a shape that is not there, what the
checkers saw, and the final caption without it, told from an ordinary ``factcap caption``
output and the scenes' truth (``factcap bench shapes scenes``).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from factcap.bench.shapes.run import write_scenes
    >>> from factcap.bench.shapes.world import scenes
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = write_scenes(scenes(2, seed=1), folder)
    >>> [s.id for s in read_scenes(folder)] == [s.id for s in scenes(2, seed=1)]
    True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from factcap.bench.shapes.run import removed_hallucinations
from factcap.bench.shapes.world import Obj, Scene
from factcap.engine.records import read_records
from factcap.schema import Record


def read_scenes(folder: str | Path) -> list[Scene]:
    """The scenes whose truth ``write_scenes`` kept in ``folder/truth.jsonl``."""
    out = []
    with open(Path(folder) / "truth.jsonl", encoding="utf-8") as handle:
        for line in handle:
            truth: dict[str, Any] = json.loads(line)
            objects = tuple(
                Obj(o["shape"], o["colour"], o["size"], tuple(o["box"])) for o in truth["objects"]
            )
            out.append(Scene(truth["id"], objects, background=0))
    return out


def stories(scene_folder: str | Path, results: str | Path, limit: int = 3) -> list[str]:
    """Up to ``limit`` stories (see the module docstring), in scene order."""
    by_name = {Path(r["source"]).stem: r for r in read_records(results) if r.get("source")}
    pairs = [(s, by_name[s.id]) for s in read_scenes(scene_folder) if s.id in by_name]
    records = [Record.from_dict(r) for _, r in pairs]
    return removed_hallucinations([s for s, _ in pairs], records, limit=limit)
