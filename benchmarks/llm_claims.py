"""Claims-stage LLM speed at the small preset's LLM size (Qwen2.5-1.5B-Instruct), batch 1 and
batch 8, with prefix reuse on and off; prints one JSON line last.

    python benchmarks/llm_claims.py                   # 4 of the 28 layers, CPU (a few minutes)
    python benchmarks/llm_claims.py --full --device cuda --dtype float16   # the whole 1.5 B
    python benchmarks/llm_claims.py --model tiny:llm --repeats 1           # any LLM spec

Builds Qwen2.5-1.5B-Instruct's published architecture with random weights
(``factcap.backends.real_size``; ``--layers N`` keeps N decoder layers at the real widths and
the real 151,936-token vocabulary, ``--full`` all 28; cached under ``--cache``, default
``$FACTCAP_CACHE/real_size`` or ``~/.cache/factcap/real_size``, so reruns skip the build) and
loads it through factcap's registry as the ``llm`` role (``CausalLM``). The conversations are
the claims stage's own: ``extract_claims`` is run on 9 items with two captions each (short
BLIP-like, longer SmolVLM-like) against a recorder, and what it sent is replayed.

Timed, for ``reuse_prefix`` on and off alternately in each of ``--repeats`` rounds (each
round starts with no kept prefixes): **batch 1** (4 items, one ``chat`` call each, as a
``batch_size: 1`` run sends them) and **batch 8** (one call with 8 items). The 9th item is a
warm-up call first (for reuse on, it is the recent prompt the first lone prompt shares its
prefix with, as in a running job). Random weights never write an end token, so every reply
is exactly ``--new-tokens`` tokens (``min_new_tokens`` set to it). ``reuse_on_tok_s`` /
``reuse_off_tok_s`` = generated tokens per second of ``chat`` wall time (prefill included),
the best round; ``*_cpu`` the same over this process's CPU time (steadier on a shared
machine); ``prompt_tokens`` the mean prompt length, ``shared_tokens`` the 8 prompts' common
token prefix, ``prefill_saved`` the share of prompt tokens that prefix reuse did not prefill.
Reuse saves prefill only: the longer the replies, the smaller the speed-up.
The claims template puts the captions after all of its fixed text, so the 8 prompts share
everything but their captions (before the reorder they shared 88 of 465 tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ARCH = "qwen2.5-1.5b-instruct"
LABELS = ["hf:Salesforce/blip-image-captioning-large", "hf:HuggingFaceTB/SmolVLM-256M-Instruct"]
CAPTIONS = [
    (
        "a cat sitting on a red sofa",
        "A grey tabby cat is curled up on a red velvet sofa next to a window. Sunlight falls "
        "on a striped cushion, and a green plant stands on the floor beside the sofa.",
    ),
    (
        "an astronaut holding a flag",
        "An astronaut in a white spacesuit stands on a launch pad holding an American flag. "
        "A rocket rises behind him against a clear blue sky.",
    ),
    (
        "a cup of coffee on a table",
        "A white cup of black coffee sits on a saucer on a wooden table, with a silver spoon "
        "and two sugar cubes beside it.",
    ),
    (
        "two dogs playing in the snow",
        "Two brown dogs chase each other across a snowy field. One of them carries a red ball "
        "in its mouth; pine trees line the edge of the field.",
    ),
    (
        "a man riding a motorcycle",
        "A man wearing a black helmet rides a red motorcycle down a wet city street at night. "
        "Shop signs glow on both sides, and the word OPEN is written above a door.",
    ),
    (
        "a bowl of fruit",
        "A blue ceramic bowl holds three green apples, a bunch of yellow bananas and a few "
        "oranges on a kitchen counter.",
    ),
    (
        "a train at a station",
        "A long silver train waits at a station platform under a glass roof. Several people "
        "with suitcases stand near the open doors, and a clock shows ten past nine.",
    ),
    (
        "a girl with a kite",
        "A smiling girl in a yellow raincoat flies a pink kite on a windy beach. Waves break "
        "behind her and two seagulls fly overhead.",
    ),
    (
        "a laptop on a desk",
        "An open laptop sits on a white desk next to a lamp, a notebook and a mug of tea; a "
        "window behind the desk looks out on trees.",
    ),
]


def default_cache() -> Path:
    from factcap.backends.real_size import cache_dir

    return cache_dir()


def ensure_checkpoint(cache: Path, layers: int | None) -> tuple[Path, dict[str, Any]]:
    """The cached random checkpoint (built on first use) and its build summary."""
    from factcap.backends.real_size import cached_arch

    return cached_arch(ARCH, layers, cache)


class Recorder:
    """An LLM that keeps what the claims stage sends and answers one parseable claim (so no
    repair retry is asked)."""

    name = "recorder"

    def __init__(self) -> None:
        self.sent: list[list[dict[str, str]]] = []

    def chat(self, conversations, max_new_tokens=256, temperature=0.0, json_schema=None):
        self.sent += [list(c) for c in conversations]
        return ['[{"kind": "object", "text": "There is a cat.", "subject": "cat"}]'] * len(
            conversations
        )


def claims_conversations(prompts: dict[str, str] | None = None) -> list[list[dict[str, str]]]:
    """The claims stage's conversations for :data:`CAPTIONS` (its own prompt building;
    ``prompts`` as a config's ``prompts:``)."""
    from factcap.pipeline.claims import extract_claims
    from factcap.pipeline.work import Work
    from factcap.schema import Proposal, Record

    items = []
    for i, texts in enumerate(CAPTIONS):
        record = Record(id=f"image{i}", source=f"image{i}.jpg")
        record.proposals = [Proposal(model=m, text=t) for m, t in zip(LABELS, texts, strict=True)]
        items.append(Work(record))
    recorder = Recorder()
    extract_claims(
        items, recorder, max_new_tokens=8, temperature=0.0, max_claims=16, prompts=prompts
    )
    return recorder.sent


def measure(llm: Any, conversations: list, new_tokens: int, repeats: int) -> dict[str, Any]:
    """tokens/s at batch 1 (the first 4 items, one call each) and batch 8 (one call), reuse
    on and off interleaved in each round; each round starts with no kept prefixes and one
    warm-up call (the 9th item)."""
    warm, items = conversations[-1:], conversations[:8]
    rows = llm.prompt_ids(items)
    best: dict[tuple[bool, int, str], float] = {}
    saved: dict[int, int] = {}
    replies: dict[bool, list[str]] = {}
    for _ in range(repeats):
        for reuse in (True, False):
            llm.reuse_prefix = reuse
            llm.forget_prefixes()
            llm.chat(warm, max_new_tokens=new_tokens)
            got = []
            for size, calls in ((1, [[c] for c in items[:4]]), (8, [items])):
                before = llm.prefix_tokens_saved
                wall, cpu = time.perf_counter(), time.process_time()
                for call in calls:
                    got += llm.chat(call, max_new_tokens=new_tokens)
                spent = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
                for clock, seconds in spent.items():
                    key = (reuse, size, clock)
                    best[key] = min(best.get(key, seconds), seconds)
                if reuse:
                    saved[size] = llm.prefix_tokens_saved - before
            replies[reuse] = got
    out: dict[str, Any] = {
        "prompt_tokens": round(sum(map(len, rows)) / len(rows)),
        "shared_tokens": common_prefix_length(rows),
    }
    for size, n_items in ((1, 4), (8, 8)):
        tokens = n_items * new_tokens
        figures: dict[str, float] = {}
        for clock, tag in (("wall", ""), ("cpu", "_cpu")):
            on, off = tokens / best[True, size, clock], tokens / best[False, size, clock]
            figures[f"reuse_on_tok_s{tag}"] = round(on, 2)
            figures[f"reuse_off_tok_s{tag}"] = round(off, 2)
            figures[f"speedup{tag}"] = round(on / off, 3)
        figures["prefill_saved"] = round(saved[size] / sum(map(len, rows[:n_items])), 3)
        out[f"batch{size}"] = figures
    out["same_replies"] = replies[True] == replies[False]
    return out


def common_prefix_length(rows: list[list[int]]) -> int:
    from factcap.backends.hf_vlm import common_prefix_length as common

    return common(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4, help="decoder layers kept (default 4)")
    parser.add_argument("--full", action="store_true", help="all 28 layers (the whole 1.5 B)")
    parser.add_argument("--new-tokens", type=int, default=12, help="tokens generated per reply")
    parser.add_argument("--repeats", type=int, default=2, help="best of N timed rounds")
    parser.add_argument("--cache", type=Path, default=None, help="where checkpoints are built")
    parser.add_argument("--model", default=None, help="time this LLM spec instead of building")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    if args.repeats < 1 or args.layers < 1 or args.new_tokens < 1:
        parser.error("--repeats, --layers and --new-tokens must be at least 1")

    import torch

    from factcap.backends import registry

    conversations = claims_conversations()
    layers = None if args.full else args.layers
    if args.model:
        spec, label, summary = args.model, args.model, {}
    else:
        path, summary = ensure_checkpoint(args.cache or default_cache(), layers)
        spec = f"hf:{path}"
        label = f"{ARCH} (random)"
    llm = registry.build(
        "llm", spec, device=args.device, dtype=args.dtype, min_new_tokens=args.new_tokens
    )
    config = llm.model.config
    result: dict[str, Any] = {
        "benchmark": "llm_claims",
        "model": label,
        "model_type": config.model_type,
        "prefix_reuse_off": llm.prefix_reuse_off,
        "parameters": summary.get("parameters") or sum(p.numel() for p in llm.model.parameters()),
        "layers": config.num_hidden_layers,
        "published_layers": 28 if not args.model else config.num_hidden_layers,
        "device": args.device,
        "dtype": args.dtype,
        "new_tokens": args.new_tokens,
        **measure(llm, conversations, args.new_tokens, args.repeats),
    }
    result.update(
        repeats=args.repeats,
        machine=f"{platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
