"""VQA cost of many claims about one image, at blip-vqa-base size; prints one JSON line last.

    python benchmarks/vqa_claims.py                 # full size (361 M parameters), CPU heavy
    python benchmarks/vqa_claims.py --layers 1      # every stack cut to 1 layer: a quick run
    python benchmarks/vqa_claims.py --model tiny:blip_vqa --repeats 1   # any checkpoint

Builds a ``BlipForQuestionAnswering`` with blip-vqa-base's published sizes and random weights
(``factcap.backends.real_size.build_arch``; cached under ``--cache``, default
``$FACTCAP_CACHE/real_size`` or ``~/.cache/factcap/real_size``, so reruns skip the build),
loads it through factcap's registry and times ``BlipVQA.yes_probability`` for one photo with
1 question and with 16 distinct questions, with ``encode_once`` on (each distinct image
encoded once per batch) and off (encoded for every pair, as before), in the same run: a
warm-up call first, then the best of ``--repeats`` rounds, the four cases interleaved so a
busy moment hurts each alike. ``claims_ratio`` = t16 / t1 (target <= 2.5),
``claims_ratio_before`` the same with encode_once off, ``speedup_16`` = the 16-question time
before / after, ``max_abs_diff`` the largest difference between the two paths' answers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ARCH = "blip-vqa-base"
QUESTIONS = [
    "is there a cat in the image?",
    "is there a dog in the image?",
    "is the man wearing a white suit?",
    "is there an american flag?",
    "are there two birds on the wire?",
    "is the sofa red?",
    "is there a cup of coffee on the table?",
    "does the image show the text open?",
    "is the sky cloudy?",
    "is there a bicycle in the street?",
    "are there three cars on the road?",
    "is the horse brown?",
    "is there a laptop on the desk?",
    "is the flower pink?",
    "is there a train at the station?",
    "is the girl smiling?",
]


def default_cache() -> Path:
    from factcap.backends.real_size import cache_dir

    return cache_dir()


def ensure_checkpoint(cache: Path, layers: int | None) -> tuple[Path, dict]:
    """The cached random checkpoint (built on first use) and its build summary."""
    from factcap.backends.real_size import cached_arch

    return cached_arch(ARCH, layers, cache)


def timed(fn) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=None, help="cut every stack to N layers")
    parser.add_argument("--repeats", type=int, default=3, help="best of N timed calls")
    parser.add_argument("--cache", type=Path, default=None, help="where checkpoints are built")
    parser.add_argument("--model", default=None, help="time this VQA spec instead of building")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

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
    vqa = registry.build("vqa", spec, device=args.device, dtype="float32")
    parameters = summary.get("parameters") or sum(p.numel() for p in vqa.model.parameters())
    photo = Image.open(example_paths()[0]).convert("RGB")

    def ask(n: int) -> list[float]:
        return vqa.yes_probability([photo] * n, QUESTIONS[:n])

    def ask_with(encode_once: bool, n: int) -> list[float]:
        vqa.encode_once = encode_once
        return ask(n)

    cases = [(True, 1), (True, 16), (False, 1), (False, 16)]
    answers = {once: ask_with(once, 16) for once in (True, False)}  # warm-up
    ask_with(True, 1)
    best = {case: float("inf") for case in cases}
    for _ in range(args.repeats):  # interleaved, so a busy moment hurts every case alike
        for case in cases:
            best[case] = min(best[case], timed(lambda case=case: ask_with(*case)))
    t1, t16, b1, b16 = (best[case] for case in cases)
    diff = max(abs(a - b) for a, b in zip(answers[True], answers[False], strict=True))
    print(
        json.dumps(
            {
                "benchmark": "vqa_claims",
                "model": label,
                "parameters": parameters,
                "layers": summary.get("layers"),
                "device": args.device,
                "t1_s": round(t1, 3),
                "t16_s": round(t16, 3),
                "claims_ratio": round(t16 / t1, 2),
                "t1_before_s": round(b1, 3),
                "t16_before_s": round(b16, 3),
                "claims_ratio_before": round(b16 / b1, 2),
                "speedup_16": round(b16 / t16, 2),
                "max_abs_diff": diff,
                "repeats": args.repeats,
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
            }
        )
    )


if __name__ == "__main__":
    main()
