"""3D rendering: views per second, and a 3D job's overhead.

    python benchmarks/render.py [--assets 6] [--size 512] [--job-assets 8]

1. A generated textured asset of about 50,000 faces (a UV sphere with a checker texture) is
   rendered, 8 views at ``--size``, ``--assets`` times through factcap's render pool with 1
   and with 2 worker processes (each its own EGL context): views per second for each.
2. A 3D job: ``--job-assets`` such assets through the tiny preset (OCR off) with the same
   executor and sink as ``factcap caption``; ``overhead_ratio`` = wall time / (time inside
   model calls + rendering, from the records' timings). Target: <= 1.10.

Prints ONE JSON line last.
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


def textured_sphere(path: Path) -> int:
    """Write a ~49k-face textured UV sphere as GLB; returns its face count."""
    import numpy as np
    import trimesh
    from PIL import Image

    sphere = trimesh.creation.uv_sphere(radius=1.0, count=[90, 140])
    v = sphere.vertices / np.linalg.norm(sphere.vertices, axis=1, keepdims=True)
    uv = np.c_[0.5 + np.arctan2(v[:, 0], v[:, 2]) / (2 * np.pi), 0.5 + np.arcsin(v[:, 1]) / np.pi]
    cells = (np.indices((256, 256)) // 32).sum(axis=0) % 2
    texture = np.where(cells[..., None] == 0, [200, 60, 40], [40, 90, 200]).astype(np.uint8)
    material = trimesh.visual.material.SimpleMaterial(image=Image.fromarray(texture))
    sphere.visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    path.write_bytes(sphere.export(file_type="glb"))
    return len(sphere.faces)


def views_per_second(path: Path, workers: int, n: int, size: int) -> tuple[float, float]:
    from factcap.assets.pool import RenderPool
    from factcap.assets.spec import ViewSettings

    pool = RenderPool(workers, ViewSettings(size=size))
    try:
        pool.result(pool.submit(str(path), "glb"))  # warm-up: processes and GL contexts
        start = time.perf_counter()
        handles = [pool.submit(str(path), "glb") for _ in range(n)]
        rendered = [pool.result(h) for h in handles]
        wall = time.perf_counter() - start
    finally:
        pool.close()
    views = sum(len(r.images) for r in rendered)
    per_asset = sum(r.seconds for r in rendered) / len(rendered)
    return views / wall, per_asset


def job_overhead(folder: Path, size: int) -> dict[str, float]:
    from factcap.config import load_config
    from factcap.engine import open_sink, open_source
    from factcap.engine.executor import run_job
    from factcap.pipeline import Pipeline

    assets = {"size": size, "render_workers": 1}
    config = load_config(preset="tiny", overrides={"ocr": None, "batch_size": 4, "assets": assets})
    pipeline = Pipeline(config).load()
    out = folder / "out.jsonl"
    start = time.perf_counter()
    with open_sink(out, "jsonl") as sink:
        written = run_job(pipeline, open_source([str(folder / "assets")]), sink)
    wall = time.perf_counter() - start
    pipeline.close()
    model_s = render_s = 0.0
    for line in out.read_text().splitlines():
        for stage, ms in json.loads(line)["timings_ms"].items():
            if stage == "render":
                render_s += ms / 1000
            elif stage != "decode":
                model_s += ms / 1000
    return {
        "job_assets": written,
        "job_wall_s": round(wall, 2),
        "job_model_s": round(model_s, 2),
        "job_render_s": round(render_s, 2),
        "overhead_ratio": round(wall / (model_s + render_s), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=6, help="assets per render measurement")
    parser.add_argument("--size", type=int, default=512, help="view size in pixels")
    parser.add_argument("--job-assets", type=int, default=8, help="assets in the 3D job")
    parser.add_argument("--job-size", type=int, default=256, help="view size in the 3D job")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp())
    (folder / "assets").mkdir()
    faces = textured_sphere(folder / "sphere.glb")
    one, per_asset_1 = views_per_second(folder / "sphere.glb", 1, args.assets, args.size)
    two, _ = views_per_second(folder / "sphere.glb", 2, args.assets, args.size)
    for n in range(args.job_assets):
        (folder / "assets" / f"sphere{n:02d}.glb").write_bytes((folder / "sphere.glb").read_bytes())
    result = {
        "benchmark": "render",
        "faces": faces,
        "size": args.size,
        "views_per_s_1_worker": round(one, 2),
        "views_per_s_2_workers": round(two, 2),
        "speedup_2_workers": round(two / one, 2),
        "s_per_view_1_worker": round(per_asset_1 / 8, 3),
        **job_overhead(folder, args.job_size),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
