"""Peak memory of ``factcap caption`` with a preset's models at their real sizes, per memory
mode and dtype; prints one JSON line last.

    python benchmarks/memory_real_size.py --preset small
    python benchmarks/memory_real_size.py --preset small --out-dir /tmp/real-small-full
    python benchmarks/memory_real_size.py --preset vfc --layers 4 --modes low:bfloat16
    python benchmarks/memory_real_size.py --preset small --device cuda   # + peak GPU memory

Every pipeline role of the preset (captioners, LLM, detector, VQA; OCR is rapidocr, the real
model) is built at its published architecture with random weights by ``factcap models
make-random`` (once, in ``--out-dir``, reused after), and ``factcap caption`` runs on
``--images`` of the bundled photos (default 2) once per mode, each in a fresh child process
whose peak resident memory is measured from outside: ``ru_maxrss`` of that child (``wait4``),
as ``/usr/bin/time -v`` reports it. A sampler also reads the child's ``/proc/<pid>/status``
every 50 ms: the peaks of its anonymous memory (``RssAnon``: what the process allocated) and
of its file-backed memory (``RssFile``: mapped checkpoint pages, counted in RSS while mapped).
With ``--device cuda``, ``nvidia-smi`` is sampled for the child's GPU memory.

Modes (``--modes``, default ``normal:float32,normal:bfloat16,low:float32,low:bfloat16``):
``memory: normal`` (every model loaded for the whole job) or ``low`` (one model at a time,
``--memory low``), and the dtype every role loads in. Random weights never write an end token,
so every generation runs to its cap: ``--caption-tokens`` (12) and ``--llm-tokens`` (24) keep
the job short; memory hardly depends on them. Each mode also reports its wall time and
seconds per stage (from the records' ``timings_ms``), so one run compares bf16 with fp32 in
speed as well, and ``same_records_as_normal``: whether the low mode's captions and verdicts
equal the normal mode's of the same dtype. ``computed_gb`` is what ``factcap models check``
computes for the mode (parameter counts; ``factcap.backends.footprint``) beside the measured
peak. ``factcap caption``'s memory check runs as usual: a mode it refuses on this machine is
reported as ``refused`` with its message (``--no-memory-check`` passes that flag on).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

PIPELINE_ROLES = ["captioner", "llm", "detector", "vqa"]
CPU_MODES = "normal:float32,normal:bfloat16,low:float32,low:bfloat16"
GPU_MODES = "normal:float16,low:float16,normal:float32,low:float32"
GB = 2**30


def ensure_build(preset: str, layers: int | None, out_dir: Path) -> float:
    """Build the preset's pipeline roles into ``out_dir`` unless a build with the same preset
    and layers is there; returns the build's seconds (0.0 when reused)."""
    manifest = out_dir / "MANIFEST.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        roles = {slot.partition(":")[0] for slot in data.get("slots", {})}
        same = data.get("preset") == preset and data.get("layers") == layers
        if same and set(PIPELINE_ROLES) <= roles:
            return 0.0
    command = [sys.executable, "-m", "factcap", "models", "make-random", "--preset", preset]
    command += ["--out", str(out_dir), "--overwrite"] + (
        ["--layers", str(layers)] if layers else []
    )
    for role in PIPELINE_ROLES:
        command += ["--roles", role]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=sys.stderr)
    return time.perf_counter() - start


def mode_config(out_dir: Path, mode: str, dtype: str, args: argparse.Namespace, path: Path) -> Path:
    """The built preset's config for one mode: dtype, memory mode, device, generation caps;
    the roles a caption job does not use are left out."""
    import yaml

    data = yaml.safe_load((out_dir / "preset.yaml").read_text(encoding="utf-8"))
    for key in ("embedder", "text_embedder", "t2i", "judge"):
        data.pop(key, None)
    data.update(device=args.device, dtype=dtype, memory={"mode": mode})
    data["llm"]["max_new_tokens"] = args.llm_tokens
    for captioner in data["captioners"]:
        captioner.setdefault("options", {})["max_new_tokens"] = args.caption_tokens
        captioner["options"].pop("min_new_tokens", None)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


class Sampler(threading.Thread):
    """Peaks of a process's RssAnon / RssFile (``/proc``) and GPU memory (``nvidia-smi``)."""

    def __init__(self, pid: int, gpu: bool) -> None:
        super().__init__(daemon=True)
        self.pid, self.gpu = pid, gpu
        self.peaks = {"RssAnon": 0, "RssFile": 0, "gpu": 0}
        self.done = threading.Event()

    def run(self) -> None:
        ticks = 0
        while not self.done.is_set():
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key in self.peaks:
                        self.peaks[key] = max(self.peaks[key], int(value.split()[0]) * 1024)
            except (OSError, ValueError, IndexError):
                pass
            if self.gpu and ticks % 10 == 0:  # every 0.5 s: nvidia-smi is slow
                self.peaks["gpu"] = max(self.peaks["gpu"], gpu_bytes(self.pid))
            ticks += 1
            self.done.wait(0.05)


def gpu_bytes(pid: int) -> int:
    """GPU memory ``nvidia-smi`` says the process ``pid`` uses (0 if none or no nvidia-smi)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    total = 0
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid) and parts[1].isdigit():
            total += int(parts[1]) * 2**20
    return total


def run_caption(config: Path, images: list[Path], output: Path, args: argparse.Namespace) -> dict:
    """``factcap caption`` in a child process; its peaks, wall time and exit status."""
    command = [sys.executable, "-m", "factcap", "caption", *map(str, images), "-o", str(output)]
    command += ["--config", str(config), "--quiet", "--overwrite"]
    command += ["--no-memory-check"] if args.no_memory_check else []
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = Sampler(child.pid, args.device.startswith("cuda"))
    sampler.start()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    stderr = child.stderr.read() if child.stderr else ""
    child.returncode = os.waitstatus_to_exitcode(status)
    return {
        "exit": child.returncode,
        "wall_s": round(wall, 1),
        "peak_rss_gb": round(usage.ru_maxrss * 1024 / GB, 2),
        "peak_anon_gb": round(sampler.peaks["RssAnon"] / GB, 2),
        "peak_file_gb": round(sampler.peaks["RssFile"] / GB, 2),
        "peak_gpu_gb": round(sampler.peaks["gpu"] / GB, 2) if sampler.gpu else None,
        "stderr_tail": stderr.strip().splitlines()[-1:] if stderr.strip() else [],
    }


def stage_seconds(records: list[dict], captioners: dict[str, str]) -> dict[str, float]:
    """Seconds per image of each stage (``caption:<spec>`` named ``caption:<index>``)."""
    totals: dict[str, float] = defaultdict(float)
    for record in records:
        for name, ms in (record.get("timings_ms") or {}).items():
            key = captioners.get(name, name.split(":")[0])
            totals[key] += ms / 1000.0
    n = len(records) or 1
    return {k: round(v / n, 2) for k, v in sorted(totals.items())}


def fingerprint(records: list[dict]) -> list[Any]:
    """What must not change between modes: each record's captions, proposals and verdicts."""
    return [
        (
            r.get("id"),
            r.get("captions"),
            [p.get("text") for p in r.get("proposals") or []],
            [(c.get("text"), c.get("verdict")) for c in r.get("claims") or []],
        )
        for r in sorted(records, key=lambda r: str(r.get("id")))
    ]


def computed(config_path: Path) -> dict[str, Any]:
    """What ``factcap models check`` computes for this config (no model loaded)."""
    from factcap.backends import footprint
    from factcap.config import load_config
    from factcap.pipeline.plan import stage_list

    config = load_config(path=config_path)
    slots = footprint.job_slots(
        config, dict.fromkeys(s.model for s in stage_list(config) if s.model)
    )
    need = footprint.need(slots, config.memory.mode)
    return {
        "computed_gb": round(need.ram / GB, 2),
        "computed_gpu_gb": round(need.vram / GB, 2) if need.vram else None,
        "weights_gb": round(sum(s.bytes() for s in slots) / GB, 2),
        "largest_model_gb": round(max(s.bytes() for s in slots) / GB, 2),
    }


def run_preset(preset: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every mode of one preset."""
    cache = Path(os.environ.get("FACTCAP_CACHE") or Path.home() / ".cache" / "factcap")
    out_dir = args.out_dir or cache / "real_size" / f"{preset}-{args.layers or 'full'}"
    build_s = ensure_build(preset, args.layers, out_dir)
    manifest = json.loads((out_dir / "MANIFEST.json").read_text(encoding="utf-8"))
    from factcap.examples import example_paths

    images = list(example_paths())[: args.images]
    modes = [
        m.split(":")
        for m in (args.modes or (GPU_MODES if args.device != "cpu" else CPU_MODES)).split(",")
    ]
    results: dict[str, Any] = {}
    fingerprints: dict[tuple[str, str], Any] = {}
    for mode, dtype in modes:
        name = f"{mode}:{dtype}"
        config = mode_config(out_dir, mode, dtype, args, work / f"{preset}-{mode}-{dtype}.yaml")
        output = work / f"{preset}-{mode}-{dtype}.jsonl"
        print(f"{preset} {name}: captioning {len(images)} photos ...", file=sys.stderr, flush=True)
        row = {**computed(config), **run_caption(config, images, output, args)}
        row["loadavg_1m"] = round(os.getloadavg()[0], 1)
        if row["exit"] == 2:  # refused before loading (the memory check) or a config mistake
            row["refused"] = " ".join(row.pop("stderr_tail"))
        elif output.is_file():
            records = [json.loads(line) for line in output.read_text().splitlines() if line]
            import yaml

            data = yaml.safe_load(config.read_text())
            captioners = {
                f"caption:{c['model']}": f"caption:{i}" for i, c in enumerate(data["captioners"])
            }
            row["ok"] = sum(r.get("status") == "ok" for r in records)
            row["stage_s_per_image"] = stage_seconds(records, captioners)
            fingerprints[(mode, dtype)] = fingerprint(records)
            if mode == "low" and ("normal", dtype) in fingerprints:
                row["same_records_as_normal"] = (
                    fingerprints[("normal", dtype)] == fingerprints[(mode, dtype)]
                )
        results[name] = row
        print(f"{preset} {name}: {json.dumps(row)}", file=sys.stderr, flush=True)
    slots = manifest["slots"]
    return {
        "out_dir": str(out_dir),
        "layers": args.layers or "published",
        "reduced": sorted(s for s, v in slots.items() if v.get("reduced")),
        "parameters_m": {s: round(v["parameters"] / 1e6, 1) for s, v in sorted(slots.items())},
        "build_s": round(build_s, 1),
        "modes": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset", action="append", choices=["small", "vfc"], help="repeatable; default small"
    )
    parser.add_argument(
        "--modes", help=f"comma-separated mode:dtype (default {CPU_MODES}; on CUDA {GPU_MODES})"
    )
    parser.add_argument(
        "--images", type=int, default=2, help="bundled photos captioned (default 2)"
    )
    parser.add_argument("--caption-tokens", type=int, default=12)
    parser.add_argument("--llm-tokens", type=int, default=24)
    parser.add_argument(
        "--layers",
        type=int,
        help="cut every stack to N layers (real widths): for vfc on a small machine",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--out-dir", type=Path, help="where the checkpoints are built or reused (one preset)"
    )
    parser.add_argument(
        "--keep", type=Path, help="keep the configs and records of every mode in this folder"
    )
    parser.add_argument(
        "--no-memory-check", action="store_true", help="pass --no-memory-check to factcap caption"
    )
    args = parser.parse_args()
    presets = args.preset or ["small"]
    if args.out_dir and len(presets) > 1:
        parser.error("--out-dir is for one --preset")
    from factcap.backends import hardware

    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="factcap-memory-"))
    try:
        report = {p: run_preset(p, args, work) for p in presets}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(
        json.dumps(
            {
                "benchmark": "memory_real_size",
                "images": args.images,
                "caption_tokens": args.caption_tokens,
                "llm_tokens": args.llm_tokens,
                "device": args.device,
                "presets": report,
                "cpu_bf16": hardware.cpu_bf16()[1],
                "ram_gb": round(hardware.total_memory() / GB, 1),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
            }
        )
    )


if __name__ == "__main__":
    main()
