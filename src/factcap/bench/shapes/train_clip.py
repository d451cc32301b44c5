"""Train the shapes world's joint image-text embedder: a CLIP from scratch.

The model is transformers' own ``CLIPModel`` (a small ViT and a small text transformer),
saved with its ``CLIPProcessor`` (CLIP's image processor at 96 px and a CLIP BPE tokenizer
spelling each world word as one token), so factcap loads it with
``registry.build("embedder", "hf:<dir>")`` as :class:`factcap.backends.hf_clip.ClipEmbedder`
for the ``clip_score`` and ``self_retrieval`` metrics, like any hub CLIP.

Training has two phases. First the vision tower alone learns to read each patch's colour,
shape, size, kind and counts through a linear probe that is not saved (as for the VQA model:
:func:`train_vqa.patch_labels`), which teaches it to see far faster than a contrastive loss
does. Then CLIP's own symmetric contrastive loss trains both towers over batches of fresh
training scenes, each paired with one true caption: the world's caption form
(:func:`language.caption`) half of the time, otherwise one of :func:`language.references`'
templates at random (the probe stays on). The tokenizer lower-cases, so a captioner's
``there is a small red circle.`` reads as the world's caption does.

>>> "background" in world_words() and "crosses" in world_words()
True
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from factcap.bench.shapes import world
from factcap.bench.shapes.language import (
    NUMBERS,
    Noise,
    caption,
    noisy_caption,
    plural,
    references,
)
from factcap.bench.shapes.train_vqa import PATCH_CLASSES, scene_batch, vision_phase
from factcap.bench.shapes.training import Phase, TrainingRun
from factcap.bench.shapes.world import COLOURS, IMAGE_SIZE, SHAPES, SIZES

CONTEXT = 77  # tokens, as OpenAI CLIP; the longest reference takes about 40
CANONICAL_P = 0.5  # share of steps' texts in the world's caption form

# ``see_steps`` steps teach the vision tower alone through a patch probe (as for the VQA
# model, :func:`train_vqa.see_loss`), then ``steps`` contrastive steps train both towers.
PLANS: dict[str, dict[str, Any]] = {
    "full": {
        "width": 64,
        "vision_layers": 3,
        "text_layers": 2,
        "patch": 16,
        "see_steps": 1000,
        "see_batch": 32,
        "see_lr": 4e-3,
        "steps": 500,
        "batch": 64,
        "lr": 2e-3,
    },
    "smoke": {
        "width": 32,
        "vision_layers": 1,
        "text_layers": 1,
        "patch": 16,
        "see_steps": 3,
        "see_batch": 4,
        "see_lr": 1e-3,
        "steps": 4,
        "batch": 8,
        "lr": 1e-3,
    },
}


def world_words() -> list[str]:
    """Every word of the world's captions and reference templates."""
    glue = "there is are a an and on grey background shape shapes to the of left right above below"
    numbers = ["one", *(w for w in NUMBERS.values() if w != "a")]
    return [*glue.split(), *numbers, *SIZES, *COLOURS, *SHAPES, *(plural(s) for s in SHAPES)]


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """``word`` as CLIP's BPE splits it with the merges ``ranks`` (lowest rank first)."""
    pieces = [*word[:-1], word[-1] + "</w>"]
    while len(pieces) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(pairwise(pieces))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        pieces[i : i + 2] = [pieces[i] + pieces[i + 1]]
    return pieces


def bpe_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges under which each of ``words`` is one token: per word, whatever the merges
    so far leave of it is joined left to right by new merges, ranked after every earlier one
    (so they never change how an earlier word splits).

    >>> merges = bpe_merges(["are", "large"])
    >>> _bpe("large", {m: i for i, m in enumerate(merges)})
    ['large</w>']
    """
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        pieces = _bpe(word, ranks)
        while len(pieces) > 1:
            ranks.setdefault((pieces[0], pieces[1]), len(ranks))
            pieces[:2] = [pieces[0] + pieces[1]]
    return list(ranks)


def build_tokenizer(out: Path) -> Any:
    """A ``CLIPTokenizer`` whose BPE vocabulary spells each world word as one token and
    anything else in characters (``<|endoftext|>`` last, so CLIP pools where it expects)."""
    from transformers import CLIPTokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    merges = bpe_merges(world_words())
    tokens = [chr(c) for c in range(33, 127)] + [chr(c) + "</w>" for c in range(33, 127)]
    tokens += [a + b for a, b in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    vocab_path, merges_path = out / "vocab.json", out / "merges.txt"
    vocab_path.write_text(json.dumps(vocab), encoding="utf-8")
    lines = "\n".join(f"{a} {b}" for a, b in merges)
    merges_path.write_text(f"#version: 0.2\n{lines}\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(
        vocab=str(vocab_path), merges=str(merges_path), model_max_length=CONTEXT
    )
    vocab_path.unlink()  # save_pretrained writes the tokenizer files itself
    merges_path.unlink()
    return tokenizer


def build_processor(out: Path) -> Any:
    """``CLIPProcessor``: CLIP's image processor at 96 px (no resize, no crop) + the tokenizer."""
    from transformers import CLIPImageProcessorPil, CLIPProcessor

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=build_tokenizer(out))


def build_model(tokenizer: Any, plan: dict[str, Any]) -> Any:
    """A randomly initialised ``CLIPModel`` sized by ``plan``."""
    from transformers import CLIPConfig, CLIPModel

    width = plan["width"]
    heads = max(1, width // 16)
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": plan["text_layers"],
        "num_attention_heads": heads,
        "max_position_embeddings": CONTEXT,
        "projection_dim": width,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": plan["vision_layers"],
        "num_attention_heads": heads,
        "image_size": IMAGE_SIZE,
        "patch_size": plan["patch"],
        "projection_dim": width,
    }
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=width))


def texts_for(scene: world.Scene, rng: random.Random) -> str:
    """One true caption of ``scene``: the world's form with :data:`CANONICAL_P`, else a
    random reference template."""
    return caption(scene) if rng.random() < CANONICAL_P else rng.choice(references(scene))


def make_batches(
    tokenizer: Any, batch: int, seed: int, grid: int, start: int = 0
) -> Callable[[int], dict[str, Any]]:
    """Step -> ``batch`` fresh training scenes (scene ``start + step * batch + i`` of
    ``train``) with their patch labels and one caption each, tokenised."""
    rng = random.Random(f"clip/{seed}")

    def make(step: int) -> dict[str, Any]:
        scenes = world.scenes(batch, seed=seed, split="train", start=start + step * batch)
        text = tokenizer([texts_for(s, rng) for s in scenes], padding=True, return_tensors="pt")
        return {**text, **scene_batch(scenes, grid)}

    return make


class Trainee(torch.nn.Module):
    """The CLIP being trained plus a linear probe on its vision tower's patch tokens, trained
    to read what :func:`train_vqa.patch_labels` says of each patch (not saved)."""

    def __init__(self, clip: Any):
        super().__init__()
        self.clip = clip
        width = clip.config.vision_config.hidden_size
        self.probe = torch.nn.Linear(width, sum(PATCH_CLASSES))


def _probe_loss(trainee: Trainee, patches: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = trainee.probe(patches[:, 1:]).split(PATCH_CLASSES, dim=-1)
    return torch.stack(
        [F.cross_entropy(x.flatten(0, 1), labels[..., i].flatten()) for i, x in enumerate(logits)]
    ).sum()


def see_loss(trainee: Trainee, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The patch probe's loss alone: the first phase, which trains the vision tower."""
    patches = trainee.clip.vision_model(pixel_values=batch["pixel_values"]).last_hidden_state
    return _probe_loss(trainee, patches, batch["patch_labels"])


def contrastive_loss(trainee: Trainee, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """CLIP's symmetric contrastive loss over the batch, plus half the patch probe's loss."""
    out = trainee.clip(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        pixel_values=batch["pixel_values"],
        return_loss=True,
    )
    patches = out.vision_model_output.last_hidden_state
    return out.loss + 0.5 * _probe_loss(trainee, patches, batch["patch_labels"])


def train(
    out: Path,
    *,
    size: str = "full",
    seed: int = 0,
    log: Callable[[str], None] = print,
    steps: int | None = None,
    eval_n: int | None = None,
    **plan_overrides: Any,
) -> dict[str, Any]:
    """Train the CLIP into ``out``; returns training stats and held-out quality.

    ``steps`` (the contrastive phase) and other :data:`PLANS` entries can be overridden;
    ``eval_n`` held-out scenes are evaluated (default: 100 at full size, none at smoke).
    """
    run = TrainingRun.start(
        PLANS, out, size=size, seed=seed, steps=steps, eval_n=eval_n, log=log, **plan_overrides
    )
    plan = run.plan
    processor = build_processor(run.out)
    model = build_model(processor.tokenizer, plan)
    grid = IMAGE_SIZE // plan["patch"]
    after = plan["see_steps"] * plan["see_batch"]
    stats = run.fit(
        Trainee(model),
        vision_phase(plan["see_batch"], seed, grid, plan, see_loss),
        Phase(
            make_batches(processor.tokenizer, plan["batch"], seed, grid, start=after),
            plan["steps"],
            plan["lr"],
            contrastive_loss,
        ),
    )
    model.save_pretrained(run.out)
    processor.save_pretrained(run.out)
    return run.finish(stats, evaluate)


def evaluate(out: Path, n: int = 100, seed: int = 0) -> dict[str, Any]:
    """Held-out quality of the CLIP in ``out`` on ``n`` ``test`` scenes, through the real
    backend (``registry.build("embedder", "hf:<out>")``): text-to-image recall@1 and @5 of
    each scene's caption among the ``n`` images, for the world's caption form, its lower-case
    spelling and every reference template; the mean cosine of true pairs against
    mismatched ones (a caption with every other image); and ``prefers_true``, how often the
    true caption beats one with a captioner's mistake (an inserted object, wrong colours)."""
    from factcap.backends import registry
    from factcap.metrics.retrieval import recall_at_k

    embedder = registry.build("embedder", f"hf:{out}", device="cpu", dtype="float32")
    held_out = world.scenes(n, seed=seed, split="test")
    start = time.perf_counter()
    images = embedder.embed_images([s.render() for s in held_out])
    variants = {
        "caption": [caption(s) for s in held_out],
        "lowercase": [caption(s).lower() for s in held_out],
        "references": [r for s in held_out for r in references(s)],
    }
    owners = {
        "caption": list(range(n)),
        "lowercase": list(range(n)),
        "references": [i for i, s in enumerate(held_out) for _ in references(s)],
    }
    report: dict[str, Any] = {"n": n}
    for name, texts in variants.items():
        emb = embedder.embed_texts(texts)
        recall = recall_at_k(emb, images, owners[name], ks=(1, 5))
        sims = emb @ images.T
        own = np.zeros_like(sims, dtype=bool)
        own[np.arange(len(texts)), owners[name]] = True
        report[name] = {
            "r1": round(recall[1], 4),
            "r5": round(recall[5], 4),
            "cos_true": round(float(sims[own].mean()), 4),
            "cos_mismatched": round(float(sims[~own].mean()), 4),
        }
    report["prefers_true"] = _prefers_true(embedder, held_out, images, seed)
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["r1"], report["r5"] = report["caption"]["r1"], report["caption"]["r5"]
    return report


def _prefers_true(
    embedder: Any, scenes: list[world.Scene], images: np.ndarray, seed: int
) -> dict[str, float]:
    """Per captioner failure mode (one inserted object; every colour wrong), the share of
    scenes whose true caption is closer to the image than the caption with that mistake."""
    rng = random.Random(f"clip-eval/{seed}")
    truth = embedder.embed_texts([caption(s) for s in scenes])
    own = (truth * images).sum(1)
    found = {}
    for name, noise in {"insert": Noise(insert=1.0), "colour": Noise(colour=1.0)}.items():
        pairs = [(i, noisy_caption(s, noise, rng)) for i, s in enumerate(scenes)]
        pairs = [(i, text) for i, text in pairs if text != caption(scenes[i])]
        wrong = embedder.embed_texts([text for _, text in pairs])
        rows = [i for i, _ in pairs]
        better = own[rows] > (wrong * images[rows]).sum(1)
        found[name] = round(float(better.mean()), 4) if rows else float("nan")
    return found
