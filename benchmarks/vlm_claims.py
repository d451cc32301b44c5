"""Chat-VLM VQA cost of many claims about one image, at SmolVLM-256M size; prints one JSON
line last.

    python benchmarks/vlm_claims.py                  # full size (256 M parameters), CPU heavy
    python benchmarks/vlm_claims.py --skip-before    # only the prefix-reuse path (full size:
                                                     # the per-pair path runs the 17-tile
                                                     # vision tower 16 times)
    python benchmarks/vlm_claims.py --layers 1       # every stack cut to 1 layer
    python benchmarks/vlm_claims.py --model tiny:chat_vlm --repeats 1   # any checkpoint

Builds SmolVLM-256M-Instruct (Idefics3: SigLIP at 512 px tiles, a SmolLM2-135M-shaped
decoder) with its published sizes and random weights (``factcap.backends.real_size``; cached
under ``--cache``, default ``$FACTCAP_CACHE/real_size`` or ``~/.cache/factcap/real_size``, so
reruns skip the build), loads it through factcap's registry as the ``vqa`` role
(``ChatVLMVQA``) and times ``yes_probability`` for one photo with 1 question and with 16
distinct questions, with ``reuse_prefix`` on (the image and the common prompt start prefilled
once, the questions batched on its key/value cache) and off (one plain pass per pair, as
before), in the same run: a warm-up call first, then the best of ``--repeats``.
``claims_ratio`` = t16 / t1 (target <= 3), ``claims_ratio_before`` the same with reuse off,
``speedup_16`` = the 16-question time before / after, ``max_abs_diff`` the largest difference
between the two paths' probabilities.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ARCH = "smolvlm-256m-instruct"
QUESTIONS = [
    "Is there a cat in the image?",
    "Is there a dog in the image?",
    "Is the man wearing a white suit?",
    "Is there an American flag?",
    "Are there two birds on the wire?",
    "Is the sofa red?",
    "Is there a cup of coffee on the table?",
    'Does the image show the text "OPEN"?',
    "Is the sky cloudy?",
    "Is there a bicycle in the street?",
    "Are there three cars on the road?",
    "Is the horse brown?",
    "Is there a laptop on the desk?",
    "Is the flower pink?",
    "Is there a train at the station?",
    "Is the girl smiling?",
]


def default_cache() -> Path:
    from factcap.backends.real_size import cache_dir

    return cache_dir()


def ensure_checkpoint(cache: Path, layers: int | None) -> tuple[Path, dict[str, Any]]:
    """The cached random checkpoint (built on first use) and its build summary."""
    from factcap.backends.real_size import cached_arch

    return cached_arch(ARCH, layers, cache)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and the seconds it took."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def best_time(fn: Callable[[], Any], repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``fn``, in seconds."""
    return min(timed(fn)[1] for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=None, help="cut every stack to N layers")
    parser.add_argument("--repeats", type=int, default=3, help="best of N timed calls")
    parser.add_argument("--cache", type=Path, default=None, help="where checkpoints are built")
    parser.add_argument("--model", default=None, help="time this VQA spec instead of building")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--skip-before", action="store_true", help="time only the prefix-reuse path"
    )
    args = parser.parse_args()
    if args.repeats < 1 or (args.layers is not None and args.layers < 1):
        parser.error("--repeats and --layers must be at least 1")

    import torch
    from PIL import Image

    from factcap.backends import registry
    from factcap.examples import example_paths

    if args.model:
        spec, label, summary = args.model, args.model, {}
    else:
        path, summary = ensure_checkpoint(args.cache or default_cache(), args.layers)
        spec = f"hf:{path}"
        label = f"{ARCH} (random)" + ("" if args.layers is None else f", {args.layers} layers")
    judge = registry.build("vqa", spec, device=args.device, dtype="float32")
    parameters = summary.get("parameters") or sum(p.numel() for p in judge.model.parameters())
    photo = Image.open(example_paths()[0]).convert("RGB")
    tokens = int(judge.encode([photo], [judge.question_prompt(QUESTIONS[0])])["input_ids"].shape[1])

    def ask(n: int) -> list[float]:
        return judge.yes_probability([photo] * n, QUESTIONS[:n])

    times: dict[bool, tuple[float, float]] = {}
    answers: dict[bool, list[float]] = {}
    for reuse in (True,) if args.skip_before else (True, False):
        judge.reuse_prefix = reuse
        ask(1)  # warm-up
        t1 = best_time(lambda: ask(1), args.repeats)
        runs = [timed(lambda: ask(16)) for _ in range(args.repeats)]
        answers[reuse], t16 = runs[0][0], min(seconds for _, seconds in runs)
        times[reuse] = (t1, t16)
    (t1, t16) = times[True]
    result: dict[str, Any] = {
        "benchmark": "vlm_claims",
        "model": label,
        "model_type": judge.model.config.model_type,
        "prefix_reuse_off": judge.prefix_reuse_off,
        "parameters": parameters,
        "layers": summary.get("layers"),
        "prompt_tokens": tokens,
        "device": args.device,
        "t1_s": round(t1, 3),
        "t16_s": round(t16, 3),
        "claims_ratio": round(t16 / t1, 2),
    }
    if False in times:
        b1, b16 = times[False]
        diff = max(abs(a - b) for a, b in zip(answers[True], answers[False], strict=True))
        result.update(
            t1_before_s=round(b1, 3),
            t16_before_s=round(b16, 3),
            claims_ratio_before=round(b16 / b1, 2),
            speedup_16=round(b16 / t16, 2),
            max_abs_diff=diff,
        )
    result.update(
        repeats=args.repeats,
        machine=f"{platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
