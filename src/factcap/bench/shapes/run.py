"""``factcap bench shapes run``: what fact-checking buys, measured against exact ground truth.

N held-out scenes (split ``test``) go through the ordinary factcap pipeline built from the
world's trained models (``hf:<dir>`` specs in a normal config, see :func:`pipeline_config`),
twice: with verification, and with verification switched off (the ``final_noverify``
ablation: the same proposals and claims, composed without verdicts, so the difference is what
checking the claims removed, not what fusing two captioners added). Every caption source —
each captioner's proposal, ``final`` and ``final_noverify`` — is scored against the
generator's ground truth (:mod:`.scoring`) and with the world's CLIP (``clip_score``,
``self_retrieval``). The records are kept, so ``factcap report`` can show them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from factcap.bench.shapes.language import mentions, phrase
from factcap.bench.shapes.scoring import score_captions
from factcap.bench.shapes.world import COLOURS, SIZES, Scene, scenes

STYLE = "detailed"
CAPTION_TOKENS = 40  # the longest world caption (four sentences) with room to spare
LLM_TOKENS = 320  # the longest claims answer of four objects named by two captioners
BATCH_SIZE = 16
METRIC_KEYS = (
    "hallucination_rate",
    "attribute_error_rate",
    "recall",
    "count_accuracy",
    "clip_score",
    "self_retrieval_r1",
)
TARGETS = {
    "hallucination_ratio_max": 0.5,  # final / best single proposer
    "recall_ratio_min": 0.9,  # final / best single proposer
}


#: How the world's checks are set (the figures in the README decide): its own colours and
#: sizes as value sets; the detector trusted over a VQA yes for an object it did not find (on
#: seed 7, 22 of the 24 objects such a yes kept were not there); the expert looking for every
#: colour–shape name and picking each found object's size.
WORLD_CHECKS: dict[str, Any] = {
    "verify": {
        "value_sets": {"colour": list(COLOURS), "size": list(SIZES)},
        "vqa_rescue": False,
    },
    "expert": {"enabled": True, "vocabulary": "shapes", "attributes": ["size"]},
}
#: The ablations captioned besides ``final``: the config each changes.
ABLATIONS: dict[str, dict[str, Any]] = {
    "final_noexpert": {"expert": {"enabled": False}},
    "final_nocorrections": {"verify": {"alternatives": False, "corrections": False}},
    "final_noverify": {"verify": {"enabled": False}},
}


def pipeline_config(
    models: str | Path,
    verify: bool = True,
    dtype: str = "float32",
    ablation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A plain factcap config (as a mapping) naming the world's models in ``models``, loaded
    in ``dtype`` (float32 unless a run compares another), with the world's checks
    (:data:`WORLD_CHECKS`) changed by ``ablation`` (one of :data:`ABLATIONS`)."""
    from factcap.bench.shapes.train_detector import BOX_THRESHOLD

    root = Path(models).expanduser().resolve()

    def spec(name: str) -> str:
        return f"hf:{root / name}"

    return {
        "captioners": [
            {"model": spec(name), "options": {"max_new_tokens": CAPTION_TOKENS}}
            for name in ("captioner_insertion", "captioner_colour")
        ],
        "llm": {"model": spec("llm"), "max_new_tokens": LLM_TOKENS},
        "detector": {"model": spec("detector"), "options": {"box_threshold": BOX_THRESHOLD}},
        "vqa": {"model": spec("vqa")},
        "embedder": {"model": spec("clip")},
        "device": "cpu",
        "dtype": dtype,
        "batch_size": BATCH_SIZE,
        "styles": [STYLE],
        "verify": {
            **WORLD_CHECKS["verify"],
            "enabled": verify,
            **(ablation or {}).get("verify", {}),
        },
        "expert": {**WORLD_CHECKS["expert"], **(ablation or {}).get("expert", {})},
    }


def write_config(models: str | Path) -> Path:
    """Write ``models/factcap.yaml``: the world's pipeline, for ``factcap caption --config``."""
    import yaml

    path = Path(models) / "factcap.yaml"
    header = "# The shapes world's models (written by `factcap bench shapes train`).\n"
    path.write_text(header + yaml.safe_dump(pipeline_config(models), sort_keys=False))
    return path


def proposer_name(spec: str) -> str:
    """``hf:/models/captioner_colour`` → ``captioner_colour``."""
    return Path(spec.partition(":")[2]).name or spec


def write_scenes(held_out: Sequence[Scene], folder: Path) -> list[Path]:
    """Render the scenes as PNG files (named by scene id) and their truth as JSONL."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    paths = []
    with open(folder / "truth.jsonl", "w", encoding="utf-8") as truth:
        for scene in held_out:
            path = images / f"{scene.id}.png"
            scene.render().save(path)
            paths.append(path)
            truth.write(json.dumps(scene.truth()) + "\n")
    return paths


def caption_pipeline(
    pipeline: Any, paths: Sequence[Path], out: Path, label: str, log: Callable[[str], None]
) -> list[Any]:
    """Run ``pipeline`` over ``paths`` as an ordinary captioning job writing ``out`` (JSONL);
    returns the records in the order of ``paths``."""
    from factcap.engine.job import CaptionJob, JobSpec

    records: dict[str, Any] = {}
    start = time.perf_counter()

    def done(record: Any) -> None:
        records[record.source] = record
        if len(records) % 100 == 0 or len(records) == len(paths):
            rate = len(records) / (time.perf_counter() - start)
            log(f"{label}: {len(records)}/{len(paths)} scenes ({rate:.1f}/s)")

    spec = JobSpec(inputs=[str(p) for p in paths], output=out, overwrite=True)
    CaptionJob(spec, pipeline.config).run(pipeline, on_record=done)
    return [records[str(p)] for p in paths]


def source_captions(
    records: Sequence[Any], ablations: dict[str, Sequence[Any]]
) -> dict[str, list[str]]:
    """Caption text per caption source, aligned with the scenes ("" for a failed item): each
    proposer's, ``final`` and each ablation's."""
    sources: dict[str, list[str]] = {}
    for i, record in enumerate(records):
        for proposal in record.proposals:
            key = f"proposal:{proposer_name(proposal.model)}"
            sources.setdefault(key, [""] * len(records))[i] = proposal.text
    sources["final"] = [r.captions.get(STYLE, "") for r in records]
    for name, rows in ablations.items():
        sources[name] = [r.captions.get(STYLE, "") for r in rows]
    return sources


def claim_precision(held_out: Sequence[Scene], records: Sequence[Any]) -> dict[str, Any]:
    """Per claim kind, how often each verdict was right against the truth: a supported or
    corrected claim that holds, a refuted one that does not (``n`` claims each)."""
    from factcap.bench.shapes.train_llm import is_true

    tally: dict[str, dict[str, list[int]]] = {}
    for scene, record in zip(held_out, records, strict=True):
        for claim in record.claims:
            verdict = str(claim.verdict)
            if verdict == "uncertain" or claim.kind not in ("object", "attribute", "count"):
                continue
            right = is_true(claim, scene) == (verdict != "refuted")
            counts = tally.setdefault(str(claim.kind), {}).setdefault(verdict, [0, 0])
            counts[0] += right
            counts[1] += 1
    return {
        kind: {v: {"precision": round(r / n, 4), "n": n} for v, (r, n) in verdicts.items()}
        for kind, verdicts in sorted(tally.items())
    }


class _Counting:
    """A backend that counts the items (images, questions, conversations) it is given."""

    def __init__(self, backend: Any):
        self._backend, self.items = backend, 0
        self.name = backend.name

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._backend, attr)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            self.items += len(args[0]) if args and hasattr(args[0], "__len__") else 1
            return value(*args, **kwargs)

        return call


def clip_metrics(
    paths: Sequence[Path], sources: dict[str, list[str]], clip_spec: str
) -> dict[str, dict[str, float]]:
    """Mean ``clip_score`` and ``self_retrieval_r1`` per source, with factcap's own metrics."""
    from factcap.backends import registry
    from factcap.evaluate import evaluate
    from factcap.metrics.base import Sample
    from factcap.metrics.resources import Resources

    samples = [
        Sample(id=p.stem, source=str(p), caption_source=key, caption=text)
        for key, texts in sources.items()
        for p, text in zip(paths, texts, strict=True)
    ]

    def embedder() -> Any:  # float32 whatever the pipeline ran in: the figures compare
        return registry.build("embedder", clip_spec, device="cpu", dtype="float32")

    resources = Resources({"embedder": embedder}, 64)
    summary = evaluate(samples, ["clip_score", "self_retrieval"], resources).summary
    return {
        key: {
            name: summary[key].get(name, {}).get("mean", math.nan)
            for name in ("clip_score", "self_retrieval_r1")
        }
        for key in sources
    }


def check_targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, computed from the per-source metrics."""
    src = result["sources"]
    proposers = [v for k, v in src.items() if k.startswith("proposal:")]
    best_h = min(p["hallucination_rate"] for p in proposers)
    best_r = max(p["recall"] for p in proposers)
    final = src["final"]
    h_ratio = _ratio(final["hallucination_rate"], best_h)
    r_ratio = _ratio(final["recall"], best_r)
    more = src["final_noverify"]["hallucination_rate"] > final["hallucination_rate"]
    return {
        "hallucination_ratio": round(h_ratio, 4),
        "hallucination_ratio_max": TARGETS["hallucination_ratio_max"],
        "recall_ratio": round(r_ratio, 4),
        "recall_ratio_min": TARGETS["recall_ratio_min"],
        "noverify_hallucinates_more": more,
        "met": h_ratio <= TARGETS["hallucination_ratio_max"]
        and r_ratio >= TARGETS["recall_ratio_min"]
        and more,
    }


def _ratio(value: float, best: float) -> float:
    """``value / best``, where 0 / 0 is 0 (no worse than the best) and x / 0 is infinite."""
    if best:
        return value / best
    return 0.0 if value == 0 else math.inf


def _evidence(claim: Any) -> str:
    """What the checkers said about an object claim, in words."""
    said = []
    if "detector_boxes" in claim.evidence:
        boxes = len(claim.evidence["detector_boxes"])
        said.append(f"the detector found {boxes or 'no'} box{'es' * (boxes != 1)}")
    if claim.evidence.get("vqa_p_yes") is not None:
        said.append(f"VQA P(yes)={claim.evidence['vqa_p_yes']:.2f}")
    return ", ".join(said) or "no evidence recorded"


def _is_true_of(caption: str, scene: Scene) -> bool:
    """Whether ``caption`` names something and every object it names is in ``scene``, as
    many times as it says."""
    named = mentions(caption)
    return bool(named) and all(
        scene.count(m.shape, m.colour, m.size) == m.count
        if m.count
        else scene.count(m.shape, m.colour, m.size) > 0
        for m in named
    )


def removed_hallucinations(
    held_out: Sequence[Scene], records: Sequence[Any], limit: int = 2
) -> list[str]:
    """Stories for the demo: a captioner named an object that is not in the scene, the
    checkers refuted it, and the final caption is true of the scene."""
    stories = []
    for scene, record in zip(held_out, records, strict=True):
        for claim in record.claims:
            colour, _, shape = claim.subject.rpartition(" ")
            absent = claim.kind == "object" and scene.count(shape, colour or None) == 0
            if not absent or claim.verdict != "refuted":
                continue
            final = record.captions.get(STYLE, "")
            said = [p for p in record.proposals if claim.subject in p.text.lower()]
            if not said or not _is_true_of(final, scene):
                continue
            truth = ", ".join(phrase(kind, n) for kind, n in scene.groups())
            stories.append(
                f"{scene.id}: the scene has {truth}\n"
                f"  {proposer_name(said[0].model)} said: {said[0].text!r}\n"
                f"  checkers: {_evidence(claim)} -> claim {claim.text!r} refuted\n"
                f"  final caption: {final!r}"
            )
            break
        if len(stories) >= limit:
            break
    return stories


def run_benchmark(
    models: str | Path,
    n: int = 500,
    seed: int = 0,
    out: str | Path | None = None,
    log: Callable[[str], None] = print,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Run the benchmark (module docstring); returns the result that the JSON line prints.

    ``out`` keeps the scenes, their truth and both runs' records (default:
    ``<models>/runs/seed<S>-n<N>``). ``dtype``: what the pipeline's models load in (the
    CLIP model that scores the captions stays float32, so the figures compare).
    """
    from factcap.config import load_config
    from factcap.pipeline.runner import Pipeline

    models = Path(models).expanduser().resolve()
    folder = Path(out) if out else models / "runs" / f"seed{seed}-n{n}"
    folder.mkdir(parents=True, exist_ok=True)
    held_out = scenes(n, seed=seed, split="test")
    paths = write_scenes(held_out, folder)

    start = time.perf_counter()
    config = load_config(overrides=pipeline_config(models, dtype=dtype), default_preset=None)
    counted = Pipeline(config).models.wrap(_Counting)
    records = caption_pipeline(
        Pipeline(config, models=counted), paths, folder / "results.jsonl", "verify", log
    )
    calls = {slot: round(m.backend.items / n, 2) for slot, m in counted.items()}
    ablations = {}
    for name, change in ABLATIONS.items():
        overrides = pipeline_config(models, dtype=dtype, ablation=change)
        same_models = Pipeline(load_config(overrides=overrides, default_preset=None), counted)
        out = folder / f"results_{name.removeprefix('final_')}.jsonl"
        ablations[name] = caption_pipeline(same_models, paths, out, name, log)
    pipeline_s = time.perf_counter() - start

    sources = source_captions(records, ablations)
    clip = clip_metrics(paths, sources, f"hf:{models / 'clip'}")
    result: dict[str, Any] = {"n": n, "seed": seed, "dtype": dtype, "sources": {}}
    for key, texts in sources.items():
        values = {**score_captions(held_out, texts), **clip[key]}
        result["sources"][key] = {k: round(float(values[k]), 4) for k in METRIC_KEYS}
    result["claim_precision"] = claim_precision(held_out, records)
    result["model_inputs_per_image"] = calls
    result["errors"] = sum(
        r.status != "ok" for rows in [records, *ablations.values()] for r in rows
    )
    result["targets"] = check_targets(result)
    result["pipeline_s"] = round(pipeline_s, 1)
    result["examples"] = removed_hallucinations(held_out, records)
    result["records"] = str(folder / "results.jsonl")
    return result


def format_table(result: dict[str, Any]) -> str:
    """The per-source metrics as an aligned text table."""
    header = ["source", *METRIC_KEYS]
    rows = [header] + [
        [key] + [f"{values[k]:.3f}" for k in METRIC_KEYS]
        for key, values in result["sources"].items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )
