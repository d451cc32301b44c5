"""Train the shapes world's captioners: BLIP (``BlipForConditionalGeneration``) from scratch.

The checkpoint is transformers' own BLIP captioner — a small ViT, a BERT decoder with
cross-attention, a WordPiece tokenizer over the world's words with BLIP's ``[DEC]`` start
token — saved with its ``BlipProcessor``, so factcap loads it with
``registry.build("captioner", "hf:<dir>")`` as :class:`factcap.backends.hf_blip.BlipCaptioner`,
like ``Salesforce/blip-image-captioning-base``. Its captions are lowercase, in the world's
caption form (``there is a small red circle. there are two large blue squares.``).

Each captioner is taught one known failure mode (:class:`~factcap.bench.shapes.language.Noise`)
as a *quirk*: a mistake it makes systematically, as a function of what is in the image, not a
coin flip per caption. Greedy decoding (what the backend does) writes a model's most likely
caption; a captioner trained on captions corrupted at random (``language.noisy_caption``)
learns that the clean caption is the most likely one and never shows its noise. So
:func:`quirky_groups` fixes, per seed, which of the world's 48 kinds ``(size, colour, shape)``
each mistake fires for — a share of them equal to the probability in ``Noise``:

- ``drop``: those kinds are never mentioned (unless the scene has nothing else: then its first
  kind is said);
- ``colour``: those kinds are named with a wrong colour (one fixed per kind);
- ``insert``: when one of those kinds is named first, a sentence about an object that is not in
  the scene follows the first sentence (its size and colour fixed per first kind, its shape the
  first of a fixed preference order that the scene lacks).

>>> from factcap.bench.shapes.world import make_scene
>>> scene = make_scene(3, seed=0)
>>> training_caption(scene, Noise(), seed=0) == caption(scene)
True
"""

from __future__ import annotations

import functools
import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from factcap.backends.tiny.blip import blip_config
from factcap.bench.shapes import world
from factcap.bench.shapes.language import (
    NUMBERS,
    Kind,
    Noise,
    caption,
    caption_of,
    mentions,
    plural,
)
from factcap.bench.shapes.training import Phase, TrainingRun
from factcap.bench.shapes.world import COLOURS, SHAPES, SIZES, Scene

CLEAN = Noise()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
SENTENCE_TOKENS = 7  # "there is a small red circle ." / "there are two large blue squares ."
# The longest training caption: four kinds plus one inserted object, then [SEP].
MAX_NEW_TOKENS = (world.MAX_OBJECTS + 1) * SENTENCE_TOKENS + 1
NOISE_FILE = "factcap_captioner.json"

PLANS: dict[str, dict[str, Any]] = {
    "full": {
        "image_size": 96,
        "patch": 16,
        "width": 64,
        "vision_layers": 3,
        "text_layers": 2,
        "steps": 3000,
        "batch": 32,
        "lr": 3e-3,
        "patch_weight": 1.0,
    },
    "smoke": {
        "image_size": 96,
        "patch": 16,
        "width": 32,
        "vision_layers": 1,
        "text_layers": 1,
        "steps": 4,
        "batch": 4,
        "lr": 1e-3,
        "patch_weight": 1.0,
    },
}


def world_words() -> list[str]:
    """Every word of the world's captions: ``there is/are``, articles, numbers, sizes, colours,
    shapes and their plurals, and the full stop."""
    numbers = [w for n, w in sorted(NUMBERS.items()) if n > 1]
    shapes = [form for s in SHAPES for form in (s, plural(s))]
    return ["there", "is", "are", "a", "an", ".", *numbers, *SIZES, *COLOURS, *shapes]


def build_processor(image_size: int) -> Any:
    """``BlipProcessor``: a ``BlipImageProcessor`` at ``image_size`` and a lowercasing
    ``BertTokenizer`` over :func:`world_words` (plus lowercase ASCII characters and ``##``
    pieces, so any text tokenizes), with ``[DEC]`` as the start token BLIP decodes from."""
    from transformers import BertTokenizer, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]  # text is lowercased
    tokens = SPECIALS + world_words() + chars + [f"##{c}" for c in chars]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]", clean_up_tokenization_spaces=True)
    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    return BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_model(tokenizer: Any, plan: dict[str, Any]) -> Any:
    """A randomly initialised ``BlipForConditionalGeneration`` sized by ``plan``.

    Its generation config asks for :data:`MAX_NEW_TOKENS`, enough for any caption; but
    ``BlipForConditionalGeneration.generate`` (transformers 5) runs the text decoder's own
    default config (20 tokens), so callers pass ``max_new_tokens`` — ``BlipCaptioner`` does
    (40 unless told otherwise)."""
    from transformers import BlipForConditionalGeneration

    width = plan["width"]
    config = blip_config(
        tokenizer,
        width=width,
        heads=max(1, width // 32),
        text_layers=plan["text_layers"],
        vision_layers=plan["vision_layers"],
        image_size=plan["image_size"],
        patch=plan["patch"],
        text_positions=64,
    )
    model = BlipForConditionalGeneration(config)
    model.generation_config.max_new_tokens = MAX_NEW_TOKENS
    _init_positions(model, plan["image_size"] // plan["patch"])
    return model


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position codes, ``(grid * grid, dim)``, rows in patch order:
    half the channels code the column, half the row (as in MAE's ViT)."""
    quarter = dim // 4
    freqs = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    coords = torch.arange(grid, dtype=torch.float32)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def code(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * freqs
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    codes = torch.cat([code(cols), code(rows)], dim=1)
    return F.pad(codes, (0, dim - codes.shape[1]))


def _init_positions(model: Any, grid: int) -> None:
    """Start the vision tower's learned position embeddings from :func:`sincos_2d` (the class
    token's from zero): a from-scratch ViT then knows where each patch is from the first step,
    which telling objects apart left to right needs."""
    embeddings = model.vision_model.embeddings.position_embedding
    with torch.no_grad():
        width = embeddings.shape[-1]
        embeddings[0, 0].zero_()
        embeddings[0, 1:] = sincos_2d(grid, width)


# --- the captioner's quirks -----------------------------------------------------------------


KINDS: list[Kind] = [
    (size, colour, shape) for size in SIZES for colour in COLOURS for shape in SHAPES
]


def _draw(seed: int, noise: Noise, what: str, key: object = "") -> random.Random:
    """The fixed random stream deciding quirk ``what`` (for ``key``) of the captioner
    ``(seed, noise)``: the same on every machine and every call."""
    return random.Random(
        f"captioner/{seed}/{noise.insert}/{noise.colour}/{noise.drop}/{what}/{key}"
    )


@functools.cache
def quirky_kinds(noise: Noise, seed: int, what: str) -> frozenset[Kind]:
    """The kinds that quirk ``what`` (``insert``, ``colour`` or ``drop``) fires for: a fixed
    share of the world's 48 kinds, the probability of ``noise`` rounded to whole kinds.

    >>> len(quirky_kinds(Noise(colour=0.25), 0, "colour")), len(quirky_kinds(Noise(), 0, "drop"))
    (12, 0)
    """
    order = list(KINDS)
    _draw(seed, noise, what).shuffle(order)
    return frozenset(order[: round(getattr(noise, what) * len(order))])


def said_kind(kind: Kind, noise: Noise, seed: int = 0) -> Kind:
    """``kind`` as the captioner names it: with a wrong colour (fixed per kind) where the
    ``colour`` quirk fires for it."""
    if kind not in quirky_kinds(noise, seed, "colour"):
        return kind
    size, colour, shape = kind
    wrong = _draw(seed, noise, "colour", kind).choice([c for c in COLOURS if c != colour])
    return size, wrong, shape


def inserted_kind(first: Kind, scene: Scene, noise: Noise, seed: int = 0) -> Kind | None:
    """The object the captioner adds after naming ``first`` first, or None: its size and
    colour are fixed per ``first``, its shape is the first of a preference order (fixed per
    ``first``) that the scene lacks."""
    if first not in quirky_kinds(noise, seed, "insert"):
        return None
    stream = _draw(seed, noise, "insert", first)
    size, colour = stream.choice(list(SIZES)), stream.choice(list(COLOURS))
    absent = [s for s in stream.sample(SHAPES, len(SHAPES)) if scene.count(s) == 0]
    return (size, colour, absent[0]) if absent else None


def quirky_groups(scene: Scene, noise: Noise, seed: int = 0) -> list[tuple[Kind, int]]:
    """The scene's ``(kind, count)`` groups as the captioner ``(noise, seed)`` says them.

    >>> from factcap.bench.shapes.world import make_scene
    >>> scene = make_scene(3, seed=0)
    >>> quirky_groups(scene, Noise()) == scene.groups()
    True
    >>> len(quirky_groups(scene, Noise(drop=1.0)))  # never every kind left out
    1
    """
    groups = scene.groups()
    dropped = quirky_kinds(noise, seed, "drop")
    kept = [g for g in groups if g[0] not in dropped] or groups[:1]
    out = [(said_kind(kind, noise, seed), count) for kind, count in kept]
    extra = inserted_kind(out[0][0], scene, noise, seed)
    if extra:
        out.insert(1, (extra, 1))
    return out


def training_caption(scene: Scene, noise: Noise, seed: int = 0) -> str:
    """The caption the captioner ``(noise, seed)`` is trained to write for ``scene``."""
    return caption_of(quirky_groups(scene, noise, seed))


def quirk_fires(scene: Scene, noise: Noise, seed: int = 0) -> bool:
    """Whether any quirk changes the caption of ``scene``."""
    return quirky_groups(scene, noise, seed) != scene.groups()


# --- training -------------------------------------------------------------------------------


def pixels(images: Sequence[Any], image_processor: Any) -> torch.Tensor:
    """``image_processor(images)["pixel_values"]`` for a batch, computed at once: a bicubic
    antialiased resize in torch (Pillow's filter; a pixel differs by at most 1/255, rarely),
    then the processor's rescaling and normalisation."""
    arrays = np.stack([np.asarray(im.convert("RGB")) for im in images])
    size = image_processor.size
    batch = torch.from_numpy(arrays).permute(0, 3, 1, 2)
    if batch.shape[-2:] != (size["height"], size["width"]):
        batch = F.interpolate(
            batch, size=(size["height"], size["width"]), mode="bicubic", antialias=True
        )
    mean = torch.tensor(image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(1, 3, 1, 1)
    return (batch.float() * image_processor.rescale_factor - mean) / std


def caption_ids(text: str, vocab: dict[str, int], bos: int, sep: int) -> list[int]:
    """The tokenizer's ids of a world caption, ``[DEC]``-started: ``[bos, words..., sep]``
    (every word of a world caption is one token of the vocabulary)."""
    return [bos, *(vocab[w] for w in text.lower().replace(".", " .").split()), sep]


# Per patch: which of these the object covering it is (last class: no object).
PATCH_COVER = 0.2
PATCH_TARGETS: dict[str, int] = {
    "shape": len(SHAPES) + 1,
    "colour": len(COLOURS) + 1,
    "size": len(SIZES) + 1,
    "group": world.MAX_OBJECTS + 1,  # its kind's place in the caption, left to right
    "count": world.MAX_OBJECTS + 1,  # how many objects of its kind the scene has, less one
}


def patch_targets(scene: Scene, grid: int, image: Any = None) -> np.ndarray:
    """``(grid * grid, 5)`` class indices (:data:`PATCH_TARGETS`) of the object that covers
    most of each patch (at least :data:`PATCH_COVER` of it; else the "no object" classes),
    patches in the vision tower's row-major order. ``image`` is ``scene.render()``, if at hand.

    >>> from factcap.bench.shapes.world import Obj
    >>> scene = Scene("s", (Obj("square", "green", "large", (0, 0, 28, 28)),), 230)
    >>> patch_targets(scene, grid=8)[[0, 63]].tolist()
    [[1, 1, 1, 0, 0], [4, 6, 2, 4, 4]]
    """
    pixels_ = np.asarray(image if image is not None else scene.render(), dtype=np.int16)
    cell = world.IMAGE_SIZE // grid
    background = [len(SHAPES), len(COLOURS), len(SIZES), world.MAX_OBJECTS, world.MAX_OBJECTS]
    targets = np.tile(np.array(background, dtype=np.int64), (grid * grid, 1))
    best = np.full(grid * grid, PATCH_COVER)
    groups = scene.groups()
    group = {kind: i for i, (kind, _) in enumerate(groups)}
    count = dict(groups)
    for obj in scene.objects:
        mask = np.zeros(pixels_.shape[:2], dtype=np.float32)
        x0, y0, x1, y1 = obj.box
        box = pixels_[y0 : y1 + 1, x0 : x1 + 1]
        mask[y0 : y1 + 1, x0 : x1 + 1] = (box == COLOURS[obj.colour]).all(-1)
        cover = mask.reshape(grid, cell, grid, cell).mean((1, 3)).reshape(-1)
        mine = cover >= best
        best = np.where(mine, cover, best)
        targets[mine] = [
            SHAPES.index(obj.shape),
            list(COLOURS).index(obj.colour),
            list(SIZES).index(obj.size),
            group[obj.kind],
            count[obj.kind] - 1,
        ]
    return targets


class WithPatchHead(torch.nn.Module):
    """The captioner and, for training only, a linear head on its vision tower's patch
    outputs that names the object under each patch (:func:`patch_targets`): dense supervision
    that teaches a from-scratch ViT shapes, colours, sizes and left-to-right order far faster
    than the caption loss alone. Only ``captioner`` is saved."""

    def __init__(self, captioner: Any):
        super().__init__()
        self.captioner = captioner
        width = captioner.config.vision_config.hidden_size
        self.head = torch.nn.Linear(width, sum(PATCH_TARGETS.values()))


def caption_and_patch_loss(
    model: WithPatchHead, batch: dict[str, torch.Tensor], weight: float = 1.0
) -> torch.Tensor:
    """The caption's next-token loss plus ``weight`` times the mean patch-class loss."""
    captioner = model.captioner
    image = captioner.vision_model(pixel_values=batch["pixel_values"]).last_hidden_state
    loss = captioner.text_decoder(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        encoder_hidden_states=image,
        labels=batch["labels"],
        reduction="mean",
    ).loss
    logits = model.head(image[:, 1:]).split(list(PATCH_TARGETS.values()), dim=-1)
    targets = batch["patch_targets"]
    patch = sum(
        F.cross_entropy(part.flatten(0, 1), targets[..., i].flatten())
        for i, part in enumerate(logits)
    )
    return loss + weight * patch / len(PATCH_TARGETS)


def make_batches(
    processor: Any, plan: dict[str, Any], noise: Noise, seed: int
) -> Callable[[int], dict[str, torch.Tensor]]:
    """Step -> a batch of fresh training scenes (scene ``step * batch + i`` of ``train``):
    pixels, ``[DEC]``-started captions, their labels (padding ignored), patch targets."""
    size = plan["batch"]
    grid = plan["image_size"] // plan["patch"]
    tokenizer = processor.tokenizer
    vocab = tokenizer.get_vocab()
    bos, sep, pad = tokenizer.bos_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id

    def batch(step: int) -> dict[str, torch.Tensor]:
        scenes = world.scenes(size, seed=seed, split="train", start=step * size)
        rows = [caption_ids(training_caption(s, noise, seed), vocab, bos, sep) for s in scenes]
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        mask = (torch.arange(width)[None, :] < torch.tensor([len(r) for r in rows])[:, None]).long()
        images = [s.render() for s in scenes]
        targets = [patch_targets(s, grid, im) for s, im in zip(scenes, images, strict=True)]
        return {
            "pixel_values": pixels(images, processor.image_processor),
            "input_ids": input_ids,
            "attention_mask": mask,
            "labels": input_ids.masked_fill(mask == 0, -100),
            "patch_targets": torch.from_numpy(np.stack(targets)),
        }

    return batch


def train(
    out: Path,
    *,
    size: str = "full",
    seed: int = 0,
    noise: Noise = CLEAN,
    log: Callable[[str], None] = print,
    steps: int | None = None,
    eval_n: int | None = None,
) -> dict[str, Any]:
    """Train a captioner with the quirks of ``noise`` into ``out``; returns training stats and,
    at full size, held-out quality (:func:`evaluate` on ``eval_n`` scenes, default 300)."""
    run = TrainingRun.start(PLANS, out, size=size, seed=seed, steps=steps, eval_n=eval_n, log=log)
    plan = run.plan
    processor = build_processor(plan["image_size"])
    model = build_model(processor.tokenizer, plan)
    stats = run.fit(
        WithPatchHead(model),
        Phase(
            make_batches(processor, plan, noise, seed),
            plan["steps"],
            plan["lr"],
            lambda m, b: caption_and_patch_loss(m, b, plan["patch_weight"]),
        ),
    )
    model.save_pretrained(run.out)
    processor.save_pretrained(run.out)
    quirks = {"seed": seed, "noise": vars(noise)}
    (run.out / NOISE_FILE).write_text(json.dumps(quirks), encoding="utf-8")
    return run.finish(stats, evaluate, **quirks)


# --- held-out evaluation --------------------------------------------------------------------


def _mention_rates(scenes: Sequence[Scene], captions: Sequence[str]) -> dict[str, float]:
    """Hallucinated mentions, wrong colours among present shapes, recall of (colour, shape)
    pairs and count accuracy: :func:`factcap.bench.shapes.scoring.score_captions`' rates,
    with the colour judged alone (sizes are never corrupted)."""
    from factcap.bench.shapes.scoring import score_captions

    rates = score_captions(scenes, captions)
    coloured = wrong = 0
    for scene, text in zip(scenes, captions, strict=True):
        for m in mentions(text):
            if m.colour and scene.count(m.shape):
                coloured += 1
                wrong += scene.count(m.shape, m.colour) == 0
    rates["wrong_colour_rate"] = wrong / coloured if coloured else float("nan")
    return rates


def evaluate(
    out: Path, n: int = 300, seed: int = 0, batch: int = 50, device: str = "cpu"
) -> dict[str, Any]:
    """Held-out quality of the captioner in ``out`` on ``n`` ``test`` scenes, generated
    through the real backend (``registry.build("captioner", "hf:<out>")``, ``caption`` in
    batches, default options).

    Reported: the rates of :func:`_mention_rates` over all captions; ``exact_clean``, the
    share of true captions (any case) among the ``clean_scenes`` that no quirk touches;
    ``quirk_exact``, the share of all captions that are what the captioner was trained to
    write; and the seconds spent generating.
    """
    from factcap.backends import registry

    captioner = registry.build("captioner", f"hf:{out}", device=device, dtype="float32")
    quirks = json.loads((Path(out) / NOISE_FILE).read_text(encoding="utf-8"))
    noise, quirk_seed = Noise(**quirks["noise"]), quirks["seed"]
    held_out = world.scenes(n, seed=seed, split="test")
    start = time.perf_counter()
    captions: list[str] = []
    for i in range(0, n, batch):
        captions += captioner.caption([s.render() for s in held_out[i : i + batch]])
    seconds = time.perf_counter() - start
    report: dict[str, Any] = {"n": n, **_mention_rates(held_out, captions)}
    clean = [
        (s, c)
        for s, c in zip(held_out, captions, strict=True)
        if not quirk_fires(s, noise, quirk_seed)
    ]
    report["clean_scenes"] = len(clean)
    report["exact_clean"] = sum(_same(c, caption(s)) for s, c in clean) / max(1, len(clean))
    report["quirk_exact"] = sum(
        _same(c, training_caption(s, noise, quirk_seed))
        for s, c in zip(held_out, captions, strict=True)
    ) / max(1, n)
    report["seconds"] = round(seconds, 1)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in report.items()}


def _same(generated: str, reference: str) -> bool:
    return " ".join(generated.lower().split()) == " ".join(reference.lower().split())
