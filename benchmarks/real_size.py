"""A caption job through a preset's real-size random-weight models; prints one JSON line last.

    python benchmarks/real_size.py --preset small --images 8 --layers 2 --max-new-tokens 32
    python benchmarks/real_size.py --preset small --images 64 --device cuda --dtype float16

Builds the preset's pipeline roles (captioners, LLM, detector, VQA; OCR is rapidocr, the real
model) at their published architectures with random weights (``factcap models make-random``,
in a child process so the build does not count in this process's peak memory), or reuses an
earlier build in ``--out-dir`` made with the same preset and ``--layers``. Then it runs one
``CaptionJob`` over ``--images`` distinct crops of the bundled photos and reports, from the
records' own ``timings_ms``: seconds per image of each stage, each stage's share of the summed
stage time, claims per image, images per second (job wall time), the job's wall time over the
time inside the stages (``overhead_ratio``), peak RSS, and peak GPU memory on CUDA.

``--layers N`` cuts every transformer stack to N layers at the real widths (on a CPU the
full 1.5B LLM is slow); ``--max-new-tokens N`` caps every generation (captioners and LLM) to
N tokens, since random weights never write an end token and so always generate the cap.
``--baseline`` switches the speed-ups of issue 16 off where they have a switch (today: the BLIP
VQA's ``encode_once=False``, one vision pass per question instead of per distinct image).

Random weights mean: captions are random (made-up) words, the LLM's claims never parse, so
the claims stage runs its one repair retry (two generations per batch) and then takes the
captions' words as object claims (``claims_fallback_share`` says how often), up to
``--max-claims`` per image (default 16). The random detector's boxes score about 1.0 and would
confirm every object claim, so no claim would reach the VQA model; the benchmark sets the box
threshold to 1.0 (none passes) so every object claim is also asked to the VQA model, as
attribute and count claims are with real models: an upper bound on the VQA's work
(``--keep-thresholds`` keeps the preset's). The numbers measure the machinery at real sizes, not a real model's output lengths.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

#: The roles a caption job uses (the embedders and t2i serve evaluation only).
PIPELINE_ROLES = ["captioner", "llm", "detector", "vqa"]


def ensure_build(preset: str, layers: int | None, out_dir: Path) -> float:
    """Build the preset's pipeline roles into ``out_dir`` unless an earlier build with the same
    preset and layers is there; returns the build's seconds (0.0 when reused)."""
    manifest = out_dir / "MANIFEST.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        roles = {slot.partition(":")[0] for slot in data.get("slots", {})}
        if (
            data.get("preset") == preset
            and data.get("layers") == layers
            and set(PIPELINE_ROLES) <= roles
        ):
            return 0.0
    command = [sys.executable, "-m", "factcap", "models", "make-random", "--preset", preset]
    command += ["--out", str(out_dir), "--overwrite"]
    command += ["--layers", str(layers)] if layers else []
    for role in PIPELINE_ROLES:
        command += ["--roles", role]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=sys.stderr)
    return time.perf_counter() - start


def bench_config(out_dir: Path, args: argparse.Namespace) -> Any:
    """The built preset's config with the benchmark's device, dtype, batch size, token cap
    and baseline switches; roles that were not built are left out."""
    import yaml

    from factcap.config import load_config

    data = yaml.safe_load((out_dir / "preset.yaml").read_text(encoding="utf-8"))
    for key in ("embedder", "text_embedder", "t2i"):
        data.pop(key, None)
    data.update(device=args.device, dtype=args.dtype)
    if args.batch_size:
        data["batch_size"] = args.batch_size
    if args.max_new_tokens:
        cap = args.max_new_tokens
        data["llm"]["max_new_tokens"] = min(data["llm"].get("max_new_tokens", cap), cap)
        for captioner in data["captioners"]:
            options = captioner.setdefault("options", {})
            options["max_new_tokens"] = min(options.get("max_new_tokens", cap), cap)
    if not args.keep_thresholds:
        # random boxes score ~1.0: at 1.0 none passes, so every object claim is asked too
        data["detector"].setdefault("options", {})["box_threshold"] = 1.0
    if args.max_claims:
        data.setdefault("verify", {})["max_claims"] = args.max_claims
    if args.baseline:
        data["vqa"].setdefault("options", {})["encode_once"] = False
    path = out_dir / "bench.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_config(path=path)


def write_images(folder: Path, n: int) -> Path:
    """``n`` distinct crops of the bundled photos as PNGs (distinct: one record each)."""
    from PIL import Image

    from factcap.examples import example_paths

    photos = [Image.open(p).convert("RGB") for p in example_paths()]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        photo = photos[i % len(photos)]
        shift = i // len(photos)
        photo.crop((shift, 0, photo.width, photo.height)).save(folder / f"img{i:05d}.png")
    return folder


def stage_key(name: str, captioners: dict[str, str]) -> str:
    """``caption:<spec>`` -> ``caption:<index>``; ``compose:<style>`` -> ``compose`` ..."""
    if name in captioners:
        return captioners[name]
    return name.split(":")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=["small", "vfc"])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--layers", type=int, help="cut every stack to N layers (real widths)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--dtype", default="auto", help="float32, float16, bfloat16 or auto")
    parser.add_argument("--batch-size", type=int, help="default: the preset's")
    parser.add_argument("--max-new-tokens", type=int, help="cap every generation at N tokens")
    parser.add_argument(
        "--max-claims",
        type=int,
        default=16,
        help="claims checked per image (the config's verify.max_claims; default 16, about "
        "what VFC's captions give)",
    )
    parser.add_argument(
        "--keep-thresholds",
        action="store_true",
        help="keep the detector's box threshold (random boxes then pass it and no object "
        "claim reaches the VQA model); default: 1.0, so every claim is also asked",
    )
    parser.add_argument("--baseline", action="store_true", help="issue 16's speed-ups off")
    parser.add_argument(
        "--out-dir",
        type=Path,
        help="where the checkpoints are built or reused (default: "
        "$FACTCAP_CACHE/real_size/<preset>-<layers>)",
    )
    args = parser.parse_args()
    if args.images < 1:
        parser.error("--images must be at least 1")

    cache = Path(os.environ.get("FACTCAP_CACHE") or Path.home() / ".cache" / "factcap")
    out_dir = args.out_dir or cache / "real_size" / f"{args.preset}-{args.layers or 'full'}"
    build_s = ensure_build(args.preset, args.layers, out_dir)
    manifest = json.loads((out_dir / "MANIFEST.json").read_text(encoding="utf-8"))

    from factcap.backends.hf_common import resolve_device
    from factcap.engine.job import CaptionJob, JobSpec
    from factcap.pipeline import Pipeline

    config = bench_config(out_dir, args)
    work = Path(tempfile.mkdtemp(prefix="factcap-real-size-"))
    images = write_images(work / "images", args.images)
    job = CaptionJob(JobSpec(inputs=[str(images)], output=work / "out.jsonl"), config)

    start = time.perf_counter()
    pipeline = Pipeline(config).load()
    load_s = time.perf_counter() - start
    cuda = args.device.startswith("cuda")
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()

    records = []
    try:
        result = job.run(pipeline, on_record=records.append)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the generated images and the records

    captioners = {f"caption:{rc.model}": f"caption:{i}" for i, rc in enumerate(config.captioners)}
    stages: dict[str, float] = defaultdict(float)
    for record in records:
        for name, ms in record.timings_ms.items():
            stages[stage_key(name, captioners)] += ms / 1000.0
    inside = sum(stages.values()) or 1e-9
    n = len(records)
    fallback = sum(
        any("noun phrases" in note or "fallback" in note for note in r.notes) for r in records
    )
    peak_gpu = None
    if cuda:
        import torch

        peak_gpu = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(
        json.dumps(
            {
                "benchmark": "real_size",
                "preset": args.preset,
                "layers": args.layers or "published",
                "reduced": any(s.get("reduced") for s in manifest["slots"].values()),
                "parameters_m": {
                    slot: round(s["parameters"] / 1e6, 1) for slot, s in manifest["slots"].items()
                },
                "device": str(resolve_device(args.device)),
                "dtype": args.dtype,
                "baseline": args.baseline,
                "images": n,
                "ok": result.ok,
                "batch_size": config.batch_size,
                "max_new_tokens": {
                    "llm": config.llm.max_new_tokens,
                    "captioners": [rc.options.get("max_new_tokens") for rc in config.captioners],
                },
                "build_s": round(build_s, 1),
                "load_s": round(load_s, 1),
                "wall_s": round(result.seconds, 2),
                "images_per_s": round(n / result.seconds, 3),
                "s_per_image": round(result.seconds / n, 3),
                "stage_s_per_image": {k: round(v / n, 3) for k, v in sorted(stages.items())},
                "stage_share": {k: round(v / inside, 3) for k, v in sorted(stages.items())},
                "overhead_ratio": round(result.seconds / inside, 3),
                "claims_per_image": round(sum(len(r.claims) for r in records) / n, 2),
                "claims_fallback_share": round(fallback / n, 2),
                "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
                "peak_gpu_gb": peak_gpu,
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                f"{platform.python_version()}",
            }
        )
    )


if __name__ == "__main__":
    main()
