"""A caption job through a preset's real-size random-weight models, with issue 16's speed-ups on
and off in one process; prints one JSON line last (``speedup_vs_before``).

    python benchmarks/real_size.py --preset small --images 6 --layers 2 --full-roles vqa \
        --max-new-tokens 24
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
full 1.5B LLM is slow); ``--full-roles vqa,detector`` keeps those roles (or slots, e.g.
``captioner:1``) at their published layer counts: they are built apart, into ``--full-dir``
(default: ``<preset>-full`` beside ``--out-dir``, the folder ``gpu_check.sh`` fills; roles
built there before are kept), and the config points those slots at them. ``slot_layers`` in
the output says each slot's layers per stack. ``--max-new-tokens N`` caps every generation
(captioners and LLM) to N tokens, since random weights never write an end token and so
always generate the cap.

**Before and after in one run** (``--runs both``, the default): the job runs twice on the same
images, each time with its own freshly loaded pipeline: first with the speed-ups on, then with
them off where they have a switch (``baseline_switches`` in the output: BLIP VQA's
``encode_once=False``, one vision pass per (image, question) pair instead of per distinct
image, the check stage then sending pairs in calls of ``batch_size`` pairs instead of all the
questions about ``batch_size`` images; a chat VLM's (as the VQA model) and the LLM's
``reuse_prefix=False`` where the configured backend has that option; Grounding DINO's
``max_padding=1.0``, one forward for all the images of a call, each padded to the largest,
instead of one per size). The prompt templates
are the same in both runs (their fixed text first, the captions last).
``speedup_vs_before`` is the "before" run's seconds per image over the "after" run's;
``stage_speedup`` the same per stage; ``speedup_vs_before_cpu`` the same from this process's
CPU seconds (``cpu_s_per_image``), which other jobs on a shared machine disturb
less than wall time (``loadavg_1m`` says how busy it was; ``cpu_per_wall`` how much of the
time the process got a core); ``speedup_unswitched_min`` takes the other jobs out of the
stages that no switch touches (captioners, OCR, the detector where it has no switch: the
same work in both runs) by counting each with the lower of its two runs' times in both.
Each loaded pipeline first captions ``--warmup`` other images (default 1, not counted:
first-call costs), and the "after" run goes first, so costs left over count against the
speed-up. The check stage asking a repeated (image, question) pair once and the detector skipping
images without object claims have no switch: both runs have them (``no_switch``).
``--runs optimised`` or ``--runs baseline`` (``--baseline``) runs just one.

Random weights mean: captions are random (made-up) words, the LLM's claims never parse, so
the claims stage runs its one repair retry (two generations per batch) and then takes the
proposals' noun phrases as object claims (``claims_fallback_share`` says how often), up to
``--max-claims`` per image (default 16, about what VFC's captions give). Random captions
hold few noun phrases (about 3 claims per image), so each image comes with an alt-text (a
CSV manifest's ``alt_text`` column, one more proposal) naming ``--alt-objects`` objects
(default 16; 0 for none): the claims then reach ``--max-claims``, as with real captions
(``claims_per_image`` says how many there were). The random detector's boxes score about
1.0 and would confirm every object claim, so no claim would reach the VQA model; the
benchmark sets the box threshold to 1.0 (none passes) so every object claim is also asked to
the VQA model, as attribute and count claims are with real models: an upper bound on the
VQA's work (``--keep-thresholds`` keeps the preset's). The numbers measure the machinery at
real sizes, not a real model's output lengths.
"""

from __future__ import annotations

import argparse
import gc
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

#: Backend class -> the options that switch issue 16's speed-ups off (the "before" path).
SWITCHES: dict[str, dict[str, Any]] = {
    "BlipVQA": {"encode_once": False},
    "ChatVLMVQA": {"reuse_prefix": False},
    "CausalLM": {"reuse_prefix": False},
    "GroundingDinoDetector": {"max_padding": 1.0},
}
#: Speed-ups of issue 16 without a switch: both runs have them.
NO_SWITCH = {
    "check.ask_once": "a repeated (image, question) pair is asked once",
    "detect.detect_claims": "an image with no object or count claims skips the detector",
}


def slots_of(preset: str, roles: list[str]) -> set[str]:
    """The model slots (``captioner:0``, ``llm`` ...) that ``roles`` name in ``preset``."""
    from factcap.backends import real_size

    return set(real_size.preset_slots(preset, roles))


def ensure_build(preset: str, layers: int | None, out_dir: Path, roles: list[str]) -> float:
    """Build ``roles`` of the preset into ``out_dir`` unless an earlier build with the same
    preset and layers holds them; returns the build's seconds (0.0 when reused). Roles built
    there before are built again with them (``make-random --overwrite`` replaces the folder)."""
    wanted = slots_of(preset, roles)
    manifest = out_dir / "MANIFEST.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        if data.get("preset") == preset and data.get("layers") == layers:
            if wanted <= set(data.get("slots", {})):
                return 0.0
            wanted |= set(data.get("slots", {}))
    command = [sys.executable, "-m", "factcap", "models", "make-random", "--preset", preset]
    command += ["--out", str(out_dir), "--overwrite"]
    command += ["--layers", str(layers)] if layers else []
    for slot in sorted(wanted):
        command += ["--roles", slot]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=sys.stderr)
    return time.perf_counter() - start


def backend_class(role: str, spec: str) -> type:
    """The backend class the registry would build for ``role`` from ``spec`` (nothing loaded)."""
    import importlib

    from factcap.backends import registry

    scheme, location = registry.locate(spec)
    family = registry.model_type(location) if scheme == "hf" else registry.ANY
    target = registry.entry_for(role, scheme, family).target
    if not isinstance(target, str):
        return target
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def baseline_switches(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per role of the config ``data``: the options that switch its backend's speed-ups off
    (:data:`SWITCHES`), where its backend has them; a backend with a ``defaults`` table that
    lacks the option (an older version) is left alone."""
    found: dict[str, dict[str, Any]] = {}
    for role in ("vqa", "llm", "detector"):
        if not data.get(role):
            continue
        cls = backend_class(role, data[role]["model"])
        accepted = getattr(cls, "defaults", None)
        options = {
            k: v
            for k, v in SWITCHES.get(cls.__name__, {}).items()
            if accepted is None or k in accepted
        }
        if options:
            found[role] = {"backend": cls.__name__, **options}
    return found


def bench_config(
    out_dir: Path,
    args: argparse.Namespace,
    full_slots: dict[str, str],
    switches: dict[str, dict[str, Any]] | None,
    path: Path,
) -> Any:
    """The built preset's config with the benchmark's device, dtype, batch size, token cap,
    the ``full_slots`` (slot -> folder) at their full-size builds and, when given, the
    baseline ``switches``; roles that were not built are left out. Written to ``path``."""
    import yaml

    from factcap.config import load_config
    from factcap.roles import ROLES

    data = yaml.safe_load((out_dir / "preset.yaml").read_text(encoding="utf-8"))
    for key in ("embedder", "text_embedder", "t2i"):
        data.pop(key, None)
    for slot, folder in full_slots.items():
        role, _, index = slot.partition(":")
        target = data[ROLES[role].config_key]
        target = target[int(index)] if index else target
        target["model"] = f"hf:{folder}"
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
    for role, options in (switches or {}).items():
        switched = {k: v for k, v in options.items() if k != "backend"}
        data[role].setdefault("options", {}).update(switched)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_config(path=path)


#: Objects the alt-texts name (``--alt-objects``), a different run of them for each image.
OBJECTS = (
    "dog cat bicycle car bus train boat bird horse sheep cow bench chair sofa table lamp "
    "clock vase bottle cup bowl knife spoon banana apple orange pizza cake laptop phone "
    "book umbrella backpack handbag kite skateboard surfboard tree window door"
).split()


def alt_text(i: int, n: int) -> str:
    """An alt-text naming ``n`` objects, ``a dog, a cat, ...``, starting at object ``i``.

    >>> alt_text(1, 3)
    'A cat, a bicycle and a car.'
    """
    names = [f"a {OBJECTS[(i + k) % len(OBJECTS)]}" for k in range(n)]
    text = ", ".join(names[:-1]) + " and " + names[-1] if n > 1 else names[0]
    return text[0].upper() + text[1:] + "."


def write_images(folder: Path, first: int, n: int, alt_objects: int) -> Path:
    """``n`` distinct crops of the bundled photos as PNGs (distinct: one record each), crops
    ``first`` to ``first + n - 1``; with ``alt_objects``, a CSV manifest beside them whose
    ``alt_text`` column names that many objects per image (returned instead of the folder)."""
    import csv

    from PIL import Image

    from factcap.examples import example_paths

    photos = [Image.open(p).convert("RGB") for p in example_paths()]
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(first, first + n):
        photo = photos[i % len(photos)]
        shift = i // len(photos)
        name = f"img{i:05d}.png"
        photo.crop((shift, 0, photo.width, photo.height)).save(folder / name)
        rows.append({"path": name, "alt_text": alt_text(3 * i, alt_objects)})
    if not alt_objects:
        return folder
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "alt_text"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def stage_key(name: str, captioners: dict[str, str]) -> str:
    """``caption:<spec>`` -> ``caption:<index>``; ``compose:<style>`` -> ``compose`` ..."""
    if name in captioners:
        return captioners[name]
    return name.split(":")[0]


def usage() -> tuple[float, int]:
    """User + system CPU seconds of this process so far (all its threads), and its major page
    faults (pages read from disk, e.g. memory-mapped weights)."""
    now = resource.getrusage(resource.RUSAGE_SELF)
    return now.ru_utime + now.ru_stime, now.ru_majflt


def run_job(
    config: Any, images: Path, output: Path, device: str, warmup: Path | None
) -> dict[str, Any]:
    """Load ``config``'s pipeline, caption the ``warmup`` images (not counted) and then
    ``images`` into ``output``; the timed run's figures."""
    from factcap.engine.job import CaptionJob, JobSpec
    from factcap.pipeline import Pipeline

    job = CaptionJob(JobSpec(inputs=[str(images)], output=output), config)
    start = time.perf_counter()
    pipeline = Pipeline(config).load()
    load_s = time.perf_counter() - start
    warmup_s = None
    if warmup is not None:
        start = time.perf_counter()
        spec = JobSpec(inputs=[str(warmup)], output=output.with_name(f"warmup-{output.name}"))
        CaptionJob(spec, config).run(pipeline)
        warmup_s = round(time.perf_counter() - start, 1)
    cuda = device.startswith("cuda")
    if cuda:
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    records: list[Any] = []
    load_before = round(os.getloadavg()[0], 1)
    cpu_start, faults_start = usage()
    result = job.run(pipeline, on_record=records.append)
    cpu_s, faults = (b - a for a, b in zip((cpu_start, faults_start), usage(), strict=True))
    load_after = round(os.getloadavg()[0], 1)
    peak_gpu = None
    if cuda:
        import torch

        peak_gpu = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del pipeline, job
    gc.collect()

    captioners = {f"caption:{rc.model}": f"caption:{i}" for i, rc in enumerate(config.captioners)}
    stages: dict[str, float] = defaultdict(float)
    for record in records:
        for name, ms in record.timings_ms.items():
            stages[stage_key(name, captioners)] += ms / 1000.0
    inside = sum(stages.values()) or 1e-9
    n = len(records) or 1
    fallback = sum(
        any("noun phrases" in note or "fallback" in note for note in r.notes) for r in records
    )
    return {
        "images": len(records),
        "ok": result.ok,
        "load_s": round(load_s, 1),
        "warmup_s": warmup_s,
        "wall_s": round(result.seconds, 2),
        "images_per_s": round(n / result.seconds, 3),
        "s_per_image": round(result.seconds / n, 3),
        "cpu_s_per_image": round(cpu_s / n, 3),
        "cpu_per_wall": round(cpu_s / result.seconds, 2),
        "major_faults": faults,
        "stage_s_per_image": {k: round(v / n, 3) for k, v in sorted(stages.items())},
        "stage_share": {k: round(v / inside, 3) for k, v in sorted(stages.items())},
        "overhead_ratio": round(result.seconds / inside, 3),
        "claims_per_image": round(sum(len(r.claims) for r in records) / n, 2),
        "claims_fallback_share": round(fallback / n, 2),
        "peak_gpu_gb": peak_gpu,
        "loadavg_1m": [load_before, load_after],
    }


#: Role with a baseline switch -> the stages its model runs in a caption job.
SWITCHED_STAGES = {"vqa": ("check",), "llm": ("claims", "compose"), "detector": ("detect",)}
#: Stages no switch touches: the same work in both runs.
UNSWITCHED_STAGES = ("caption", "ocr", "detect", "decode")


def unswitched_min_speedup(
    after: dict[str, Any], before: dict[str, Any], switches: dict[str, dict[str, Any]]
) -> float:
    """The speed-up with the other jobs of a shared machine taken out of the stages that no
    switch touches: each of those counts in both runs with the lower of its two times; the
    switched stages (the claim check with the VQA model; claims and compose when the LLM has a switch; detect when the
    detector has one) and any other stage keep their own. On a quiet machine it equals
    ``speedup_vs_before``.

    >>> a = {"stage_s_per_image": {"caption:0": 9.0, "check": 1.0}}
    >>> b = {"stage_s_per_image": {"caption:0": 4.0, "check": 4.0}}
    >>> unswitched_min_speedup(a, b, {"vqa": {"encode_once": False}})
    1.6
    """
    switched = {stage for role in switches for stage in SWITCHED_STAGES.get(role, ())}
    totals = {"after": 0.0, "before": 0.0}
    stages = set(after["stage_s_per_image"]) | set(before["stage_s_per_image"])
    for stage in stages:
        times = {
            "after": after["stage_s_per_image"].get(stage, 0.0),
            "before": before["stage_s_per_image"].get(stage, 0.0),
        }
        if stage not in switched and stage.split(":")[0] in UNSWITCHED_STAGES:
            times = dict.fromkeys(times, min(times.values()))
        for run, value in times.items():
            totals[run] += value
    return round(totals["before"] / (totals["after"] or 1e-9), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=["small", "vfc"])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="images captioned by each loaded pipeline before the timed job, not counted "
        "(first-call costs); default 1",
    )
    parser.add_argument("--layers", type=int, help="cut every stack to N layers (real widths)")
    parser.add_argument(
        "--full-roles",
        default="",
        help="comma-separated roles or slots kept at their published layer count while "
        "--layers cuts the others, e.g. vqa,detector or captioner:1",
    )
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
        "--alt-objects",
        type=int,
        default=16,
        help="each image's alt-text names N objects (a proposal like a caption), so the "
        "claims reach --max-claims as with real captions; 0: only the random captions' "
        "(about 3 claims per image)",
    )
    parser.add_argument(
        "--keep-thresholds",
        action="store_true",
        help="keep the detector's box threshold (random boxes then pass it and no object "
        "claim reaches the VQA model); default: 1.0, so every claim is also asked",
    )
    parser.add_argument(
        "--runs",
        choices=["both", "optimised", "baseline"],
        default="both",
        help="both (default): speed-ups on, then off, and speedup_vs_before; or just one",
    )
    parser.add_argument(
        "--baseline", action="store_true", help="issue 16's speed-ups off only (--runs baseline)"
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        help="where the checkpoints are built or reused (default: "
        "$FACTCAP_CACHE/real_size/<preset>-<layers>)",
    )
    parser.add_argument(
        "--full-dir",
        type=Path,
        help="where the --full-roles are built or reused (default: <preset>-full beside --out-dir)",
    )
    args = parser.parse_args()
    if args.images < 1:
        parser.error("--images must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    if args.alt_objects < 0:
        parser.error("--alt-objects must be 0 or more")
    if args.layers is not None and args.layers < 1:
        parser.error("--layers must be at least 1")
    if args.baseline:
        if args.runs not in ("both", "baseline"):
            parser.error("--baseline and --runs optimised contradict each other")
        args.runs = "baseline"
    full_roles = [r.strip() for r in args.full_roles.split(",") if r.strip()]
    from factcap.errors import ConfigError

    try:
        full_slot_names = slots_of(args.preset, full_roles) if full_roles else set()
    except ConfigError as err:
        parser.error(f"--full-roles: {err}")
    if full_slot_names - slots_of(args.preset, PIPELINE_ROLES):
        parser.error(f"--full-roles: choose among {', '.join(PIPELINE_ROLES)} (or their slots)")

    cache = Path(os.environ.get("FACTCAP_CACHE") or Path.home() / ".cache" / "factcap")
    out_dir = args.out_dir or cache / "real_size" / f"{args.preset}-{args.layers or 'full'}"
    build_s = ensure_build(args.preset, args.layers, out_dir, PIPELINE_ROLES)
    slots = json.loads((out_dir / "MANIFEST.json").read_text(encoding="utf-8"))["slots"]
    slots = {k: v for k, v in slots.items() if k in slots_of(args.preset, PIPELINE_ROLES)}
    full_slots: dict[str, str] = {}
    if full_slot_names and args.layers:
        full_dir = args.full_dir or out_dir.parent / f"{args.preset}-full"
        build_s += ensure_build(args.preset, None, full_dir, sorted(full_slot_names))
        full = json.loads((full_dir / "MANIFEST.json").read_text(encoding="utf-8"))["slots"]
        for slot in full_slot_names:
            slots[slot] = full[slot]
            full_slots[slot] = full[slot]["path"]

    from factcap.backends.hf_common import resolve_device

    work = Path(tempfile.mkdtemp(prefix="factcap-real-size-"))
    runs: dict[str, dict[str, Any]] = {}
    try:
        images = write_images(work / "images", 0, args.images, args.alt_objects)
        warmup = None
        if args.warmup:  # further crops, distinct from the timed ones
            warmup = write_images(work / "warmup", args.images, args.warmup, args.alt_objects)
        config = bench_config(out_dir, args, full_slots, None, work / "bench.yaml")
        import yaml

        switches = baseline_switches(yaml.safe_load((work / "bench.yaml").read_text()))
        names = ["optimised", "baseline"] if args.runs == "both" else [args.runs]
        for name in names:
            if name == "baseline":
                config = bench_config(
                    out_dir, args, full_slots, switches, work / "bench-baseline.yaml"
                )
            runs[name] = run_job(config, images, work / f"{name}.jsonl", args.device, warmup)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the generated images and the records

    main_run = runs.get("optimised") or runs["baseline"]
    report: dict[str, Any] = {
        "benchmark": "real_size",
        "preset": args.preset,
        "layers": args.layers or "published",
        "full_roles": sorted(full_slots) if args.layers else "all",
        "slot_layers": {slot: s["layers"] for slot, s in sorted(slots.items())},
        "reduced": {slot: bool(s.get("reduced")) for slot, s in sorted(slots.items())},
        "parameters_m": {slot: round(s["parameters"] / 1e6, 1) for slot, s in slots.items()},
        "device": str(resolve_device(args.device)),
        "dtype": args.dtype,
        "runs": list(runs),
        "baseline": args.runs == "baseline",
        "baseline_switches": switches,
        "no_switch": NO_SWITCH,
        "batch_size": config.batch_size,
        "max_new_tokens": {
            "llm": config.llm.max_new_tokens,
            "captioners": [rc.options.get("max_new_tokens") for rc in config.captioners],
        },
        "alt_objects": args.alt_objects,
        "max_claims": args.max_claims,
        "build_s": round(build_s, 1),
        **main_run,
    }
    if len(runs) == 2:
        after, before = runs["optimised"], runs["baseline"]
        report["speedup_vs_before"] = round(before["s_per_image"] / after["s_per_image"], 3)
        report["speedup_vs_before_cpu"] = round(
            before["cpu_s_per_image"] / after["cpu_s_per_image"], 3
        )
        report["stage_speedup"] = {
            k: round(before["stage_s_per_image"].get(k, 0.0) / v, 3)
            for k, v in after["stage_s_per_image"].items()
            if v > 0
        }
        report["speedup_unswitched_min"] = unswitched_min_speedup(after, before, switches)
        report["before"] = before
    report["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    report["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    print(json.dumps(report))


if __name__ == "__main__":
    main()
