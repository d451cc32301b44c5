"""Train the shapes world's yes/no VQA model: a BLIP VQA model from scratch.

The model is transformers' own ``BlipForQuestionAnswering`` (a small ViT, a BERT question
encoder that cross-attends to the image, a BERT answer decoder that cross-attends to the
question), saved with its ``BlipProcessor`` (a WordPiece tokenizer with BLIP's ``[DEC]``), so
factcap loads it with ``registry.build("vqa", "hf:<dir>")`` as
:class:`factcap.backends.hf_blip.BlipVQA`, like any hub BLIP VQA.

It is trained on the three question forms the pipeline asks about a caption's claims
(:func:`object_question`, :func:`size_question`, :func:`count_question`), balanced yes/no
per form, with hard negatives (:func:`negatives`): a present shape in a colour it does not
have, a present colour on another shape, a present object asked with the other size, a count
off by one; plus a minimal pair of count questions per scene (:func:`number_pair`). The loss
is the answer decoder's cross-entropy for ``yes`` / ``no`` followed by ``[SEP]``, computed
exactly the way the backend reads the answer (image, question encoder, one decoder step from
``[DEC]``).

Yes/no answers alone teach a model this small to see far too slowly, so training has two
phases and three aids that are not saved (:class:`Trainee`): first the vision tower alone
learns to read each patch's colour, shape, size, kind and counts through a linear probe
(:func:`patch_labels`); then everything trains on the questions, with the probe still on and
a few cross-attention heads of the question encoder guided to the patches its words name
(:func:`guide_loss`) and a probe reading the subject's count from its ``[CLS]``.

>>> from factcap.bench.shapes.world import Obj, Scene
>>> scene = Scene("s", (Obj("circle", "red", "small", (0, 0, 16, 16)),), 230)
>>> truth(scene, Question("count", "red", "circle", count=2))
False
>>> object_question("orange", "cross"), count_question(None, "cross", 2)
('Is there a orange cross in the image?', 'Are there two crosses?')
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from factcap.backends.tiny.blip import blip_config
from factcap.bench.shapes import world
from factcap.bench.shapes.language import NUMBERS, plural
from factcap.bench.shapes.training import LossFn, Phase, TrainingRun, scene_pixels
from factcap.bench.shapes.world import COLOURS, IMAGE_SIZE, SHAPES, SIZES, Scene

FORMS = ("object", "attribute", "count")
MAX_COUNT = 4
BARE_P = 0.25  # share of questions about a bare shape ("Is there a circle in the image?")
# How a "no" question is wrong (see negatives), as relative odds among those a scene allows:
# the near misses a captioner makes most, and the colour-only or shape-only shortcuts, dominate.
NEGATIVE_WEIGHTS = {
    "size": 3.0,
    "count": 4.0,
    "number": 4.0,
    "colour": 2.0,
    "shape": 2.0,
    "absent": 1.0,
}
TEXT_POSITIONS = 64


# ``see_steps`` steps teach the vision tower alone through the patch probe (cheap: no text),
# then ``steps`` steps train everything on the questions. Full: about 185 s on 2 cores; at
# 1200 question steps size and count answers were still improving (held-out size negatives
# right 70 %, count forms 86 %; at 1800: 95 % and 93 %).
PLANS: dict[str, dict[str, Any]] = {
    "full": {
        "width": 64,
        "vision_layers": 3,
        "text_layers": 2,
        "patch": 16,
        "see_steps": 1200,
        "see_lr": 4e-3,
        "steps": 1800,
        "batch": 32,
        "lr": 2e-3,
    },
    "smoke": {
        "width": 32,
        "vision_layers": 1,
        "text_layers": 1,
        "patch": 16,
        "see_steps": 3,
        "see_lr": 1e-3,
        "steps": 4,
        "batch": 4,
        "lr": 1e-3,
    },
}


# --- questions ------------------------------------------------------------------------------


def _subject(colour: str | None, shape: str) -> str:
    return f"{colour} {shape}" if colour else shape


def object_question(colour: str | None, shape: str) -> str:
    """The pipeline's question for an ``object`` claim (always ``a``, as it asks)."""
    return f"Is there a {_subject(colour, shape)} in the image?"


def size_question(colour: str | None, shape: str, size: str) -> str:
    """The question of an ``attribute`` claim about size."""
    return f"Is the {_subject(colour, shape)} {size}?"


def count_question(colour: str | None, shape: str, count: int) -> str:
    """The question of a ``count`` claim (``count`` from 2 to 4)."""
    return f"Are there {NUMBERS[count]} {colour + ' ' if colour else ''}{plural(shape)}?"


@dataclass(frozen=True)
class Question:
    """One yes/no question about a scene: its form, subject and what it asks; ``tag`` says
    how it was drawn (``yes``, or how a false one is wrong: see :func:`negatives`)."""

    form: str
    colour: str | None
    shape: str
    size: str | None = None
    count: int | None = None
    tag: str = ""

    @property
    def text(self) -> str:
        if self.form == "object":
            return object_question(self.colour, self.shape)
        if self.form == "attribute":
            return size_question(self.colour, self.shape, str(self.size))
        return count_question(self.colour, self.shape, int(self.count or 0))


def truth(scene: Scene, q: Question) -> bool:
    """The answer per the scene: an object is there, one of them has the size, the number of
    such objects (any size) is exactly the count."""
    if q.form == "object":
        return scene.count(q.shape, q.colour) > 0
    if q.form == "attribute":
        return scene.count(q.shape, q.colour, q.size) > 0
    return scene.count(q.shape, q.colour) == q.count


def positives(scene: Scene, form: str, bare: bool) -> list[Question]:
    """Every true question of ``form`` about ``scene`` (about a bare shape with ``bare``)."""
    found = []
    for colour, shape in _kinds(scene, bare):
        if form == "object":
            found.append(Question(form, colour, shape, tag="yes"))
        elif form == "attribute":
            sizes = [z for z in SIZES if scene.count(shape, colour, z)]
            found += [Question(form, colour, shape, size=z, tag="yes") for z in sizes]
        elif 2 <= scene.count(shape, colour) <= MAX_COUNT:
            found.append(Question(form, colour, shape, count=scene.count(shape, colour), tag="yes"))
    return found


def negatives(scene: Scene, form: str, bare: bool, rng: random.Random) -> dict[str, list[Question]]:
    """False questions of ``form`` about ``scene``, by how they are wrong (the tag):
    ``size`` (a present object with the other size), ``count`` (a single object asked as
    two), ``number`` (several objects asked with a number off by one), ``colour`` (a present shape in a colour it does not have), ``shape`` (a
    present colour on a shape it is not on), ``absent`` (neither colour nor shape present).
    Questions about an object the scene lacks take any size or count."""
    kinds = _kinds(scene, bare)
    found: dict[str, list[Question]] = {tag: [] for tag in NEGATIVE_WEIGHTS}
    for colour, shape in kinds:
        n = scene.count(shape, colour)
        if form == "attribute":
            found["size"] += [
                Question(form, colour, shape, size=z, tag="size")
                for z in SIZES
                if not scene.count(shape, colour, z)
            ]
        elif form == "count":
            tag = "count" if n == 1 else "number"
            found[tag] += [
                Question(form, colour, shape, count=k, tag=tag)
                for k in (n - 1, n + 1)
                if 2 <= k <= MAX_COUNT
            ]
    colours = {c for c, _ in kinds}
    shapes = {s for _, s in kinds}
    for colour in [None] if bare else list(COLOURS):
        for shape in SHAPES:
            if (colour, shape) in kinds:
                continue
            tag = "colour" if shape in shapes else "shape" if colour in colours else "absent"
            tag = "absent" if bare else tag
            found[tag].append(_about_missing(form, colour, shape, tag, rng))
    return found


def _kinds(scene: Scene, bare: bool) -> list[tuple[str | None, str]]:
    """The scene's distinct ``(colour, shape)`` pairs in the order of its objects (a list, not
    a set: a set's order changes with the string hash seed, and the training data with it)."""
    return list(dict.fromkeys((None if bare else o.colour, o.shape) for o in scene.objects))


def _about_missing(
    form: str, colour: str | None, shape: str, tag: str, rng: random.Random
) -> Question:
    if form == "attribute":
        return Question(form, colour, shape, size=rng.choice(list(SIZES)), tag=tag)
    if form == "count":
        return Question(form, colour, shape, count=rng.randint(2, MAX_COUNT), tag=tag)
    return Question(form, colour, shape, tag=tag)


def draw_question(
    scene: Scene, form: str, answer: bool, rng: random.Random, bare: bool | None = None
) -> Question | None:
    """A random question of ``form`` about ``scene`` whose true answer is ``answer``; a
    ``no`` picks its kind of error by :data:`NEGATIVE_WEIGHTS` among those the scene allows,
    then a question with that error. None when the scene has no such question (e.g. no
    count above one for a ``yes``)."""
    bare = rng.random() < BARE_P if bare is None else bare
    if answer:
        pool = positives(scene, form, bare)
        return rng.choice(pool) if pool else None
    found = {tag: qs for tag, qs in negatives(scene, form, bare, rng).items() if qs}
    if not found:
        return None
    tag = rng.choices(list(found), weights=[NEGATIVE_WEIGHTS[t] for t in found])[0]
    return rng.choice(found[tag])


def number_pair(scene: Scene, rng: random.Random) -> list[Question]:
    """A minimal pair about the kind the scene has most of: where it has several, its true
    number (yes) and a number off by one (no); where every kind is single, whether there is
    one (yes) and whether there are two (no). Counting is the hardest form: the pair makes
    the number word decide the answer."""
    bare = rng.random() < BARE_P
    several = positives(scene, "count", bare)
    if not several:
        one = rng.choice(positives(scene, "object", bare))
        return [one, Question("count", one.colour, one.shape, count=2, tag="count")]
    most = max(q.count or 0 for q in several)
    yes = rng.choice([q for q in several if q.count == most])
    # one fewer where possible: too many is already asked often (one object asked as two,
    # two asked as three), too few only here
    wrong = yes.count + 1 if yes.count == 2 else yes.count - 1
    no = Question("count", yes.colour, yes.shape, count=wrong, tag="number")
    return [yes, no]


class Balancer:
    """Chooses the answer of each next question of a form so that yes and no stay balanced:
    the side behind is asked for, and a question is skipped (None) rather than let the two
    drift more than ``slack`` apart."""

    def __init__(self, rng: random.Random, slack: int = 4):
        self.rng = rng
        self.slack = slack
        self.owed = dict.fromkeys(FORMS, 0)  # yes minus no asked so far, per form

    def ask(self, scene: Scene, form: str) -> Question | None:
        owed = self.owed[form]
        want = self.rng.random() < 0.5 if owed == 0 else owed < 0
        q = draw_question(scene, form, want, self.rng)
        if q is None and abs(owed) < self.slack:
            want = not want
            q = draw_question(scene, form, want, self.rng)
        if q is not None:
            self.owed[form] += 1 if want else -1
        return q


# --- data -----------------------------------------------------------------------------------


def world_words() -> list[str]:
    """Every word the questions and answers use."""
    numbers = [w for w in NUMBERS.values() if w != "a"]
    glue = ["is", "are", "there", "a", "an", "the", "in", "image", "yes", "no"]
    return [*glue, *numbers, *COLOURS, *SIZES, *SHAPES, *(plural(s) for s in SHAPES)]


def build_processor(out: Path) -> Any:
    """A ``BlipProcessor``: BLIP's image processor at 96 px and a lower-casing WordPiece
    tokenizer holding every world word as one token (others spell out), with ``[DEC]``."""
    from transformers import BertTokenizer, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(33, 127)]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"]
    tokens = specials + chars + [f"##{c}" for c in chars] + world_words()
    vocab_path = out / "vocab.txt"
    vocab_path.write_text("\n".join(dict.fromkeys(tokens)) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(
        vocab=str(vocab_path), bos_token="[DEC]", extra_special_tokens=["[ENC]"]
    )
    vocab_path.unlink()  # save_pretrained writes the tokenizer files itself
    image_processor = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_model(tokenizer: Any, plan: dict[str, Any]) -> Any:
    """A randomly initialised ``BlipForQuestionAnswering`` sized by ``plan``."""
    from transformers import BlipForQuestionAnswering

    width = plan["width"]
    config = blip_config(
        tokenizer,
        width=width,
        heads=max(1, width // 16),
        text_layers=plan["text_layers"],
        vision_layers=plan["vision_layers"],
        image_size=IMAGE_SIZE,
        patch=plan["patch"],
        text_positions=TEXT_POSITIONS,
    )
    return BlipForQuestionAnswering(config)


PATCH_CLASSES = (1 + len(COLOURS), 1 + len(SHAPES), 1 + len(SIZES), 2, 5, 5, 1 + 24)


def patch_labels(scene: Scene, grid: int) -> np.ndarray:
    """Per patch of a ``grid`` x ``grid`` layout (row-major), about the object covering the
    patch centre (all 0 on the background): its colour, shape and size, whether its centre
    lies in the patch, how many objects of its colour and shape and how many of its shape
    the scene has, and its colour and shape as one class (so that a patch's kind can be read
    at once, not only as a colour plus a shape). ``(grid * grid, 7)`` class indices for
    :class:`Trainee`'s probe.

    >>> from factcap.bench.shapes.world import Obj
    >>> scene = Scene("s", (Obj("circle", "red", "small", (0, 0, 16, 16)),), 230)
    >>> patch_labels(scene, grid=8)[0].tolist()
    [1, 1, 1, 1, 1, 1, 1]
    """
    patch = IMAGE_SIZE / grid
    centres = (np.arange(grid) + 0.5) * patch
    cx, cy = np.tile(centres, grid), np.repeat(centres, grid)
    labels = np.zeros((grid * grid, len(PATCH_CLASSES)), dtype=np.int64)
    colours, shapes, sizes = list(COLOURS), list(SHAPES), list(SIZES)
    for obj in scene.objects:
        x0, y0, x1, y1 = obj.box
        inside = (cx >= x0) & (cx <= x1) & (cy >= y0) & (cy <= y1)
        labels[inside] = (
            1 + colours.index(obj.colour),
            1 + shapes.index(obj.shape),
            1 + sizes.index(obj.size),
            0,
            min(4, scene.count(obj.shape, obj.colour)),
            min(4, scene.count(obj.shape)),
            1 + colours.index(obj.colour) * len(shapes) + shapes.index(obj.shape),
        )
        ox, oy = obj.center
        labels[int(oy // patch) * grid + int(ox // patch), 3] = 1
    return labels


def scene_batch(scenes: Sequence[Scene], grid: int) -> dict[str, torch.Tensor]:
    """``pixel_values`` and :func:`patch_labels` of ``scenes``."""
    labels = np.stack([patch_labels(s, grid) for s in scenes])
    return {"pixel_values": scene_pixels(scenes), "patch_labels": torch.from_numpy(labels)}


def scene_batches(batch: int, seed: int, grid: int) -> Callable[[int], dict[str, torch.Tensor]]:
    """Step -> :func:`scene_batch` of training scenes ``step * batch ...``."""
    return lambda step: scene_batch(
        world.scenes(batch, seed=seed, split="train", start=step * batch), grid
    )


def vision_phase(batch: int, seed: int, grid: int, plan: dict[str, Any], loss_fn: LossFn) -> Phase:
    """The first phase of the VQA and CLIP trainers, which trains the vision tower alone
    (``loss_fn``, a patch probe's loss) on :func:`scene_batches` of ``batch`` scenes, for the
    plan's ``see_steps`` at ``see_lr``; the scenes of the second phase start after these."""
    return Phase(
        scene_batches(batch, seed, grid),
        plan["see_steps"],
        plan["see_lr"],
        loss_fn,
        name="vision",
        logs=5,
    )


class Batches:
    """Step -> a batch: ``batch`` fresh training scenes (scene ``step * batch + i`` of
    ``train``), each asked one balanced question of every form it allows, with the patch
    labels of the scenes and where each question names its colour and shape."""

    def __init__(self, tokenizer: Any, batch: int, seed: int, grid: int, start: int = 0):
        self.tokenizer = tokenizer
        self.batch = batch
        self.seed = seed
        self.grid = grid
        self.start = start
        self.balancer = Balancer(random.Random(f"vqa/{seed}"))
        self.ids = {w: tokenizer.convert_tokens_to_ids(w) for w in world_words()}

    def _word_position(self, input_ids: torch.Tensor, words: Sequence[str | None]) -> torch.Tensor:
        ids = torch.tensor([self.ids[w] if w else -1 for w in words])
        hits = input_ids == ids[:, None]
        return torch.where(hits.any(1), hits.int().argmax(1), -1)

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        first = self.start + step * self.batch
        scenes = world.scenes(self.batch, seed=self.seed, split="train", start=first)
        rows, asked = [], []
        for i, scene in enumerate(scenes):
            pair = number_pair(scene, self.balancer.rng)
            for q in [self.balancer.ask(scene, form) for form in FORMS] + pair:
                if q is not None:
                    rows.append(i)
                    asked.append((q, truth(scene, q)))
        encoded = self.tokenizer([q.text for q, _ in asked], padding=True, return_tensors="pt")
        shape_words = [plural(q.shape) if q.form == "count" else q.shape for q, _ in asked]
        colours, shapes = [None, *COLOURS], list(SHAPES)
        return {
            **scene_batch(scenes, self.grid),
            "rows": torch.tensor(rows),
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "answers": torch.tensor([self.ids["yes" if a else "no"] for _, a in asked]),
            "colours": torch.tensor([colours.index(q.colour) for q, _ in asked]),
            "shapes": torch.tensor([1 + shapes.index(q.shape) for q, _ in asked]),
            "colour_at": self._word_position(encoded["input_ids"], [q.colour for q, _ in asked]),
            "shape_at": self._word_position(encoded["input_ids"], shape_words),
            "counts": torch.tensor(
                [
                    min(4, scenes[i].count(q.shape, q.colour))
                    for i, (q, _) in zip(rows, asked, strict=True)
                ]
            ),
        }


class Trainee(torch.nn.Module):
    """The BLIP model being trained, with training aids that are not saved (only ``blip``
    is): a linear probe on the patch tokens, trained to read what :func:`patch_labels` says
    of each patch, so the vision tower learns to see long before yes/no answers alone would
    teach it; a view of the question encoder's cross-attention, so that a few heads can be
    guided to look where the question's words point (:func:`guide_loss`); and a probe on the
    question encoder's ``[CLS]`` that reads how many objects the question is about."""

    def __init__(self, blip: Any):
        super().__init__()
        self.blip = blip
        width = blip.config.vision_config.hidden_size
        self.probe = torch.nn.Linear(width, sum(PATCH_CLASSES))
        self.counter = torch.nn.Linear(blip.config.text_config.hidden_size, 1 + MAX_COUNT)
        self.attention: dict[int, torch.Tensor] = {}
        self.parts: dict[str, float] = {}  # the last batch's losses, for inspection
        for i, layer in enumerate(blip.text_encoder.encoder.layer):
            layer.crossattention.self.register_forward_hook(self._keep(i))

    def _keep(self, layer: int) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: Any, output: tuple[torch.Tensor, ...]) -> None:
            self.attention[layer] = output[1]

        return hook


def _attention_mass(probs: torch.Tensor, at: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log of the attention that each question's token ``at`` gives the image tokens in
    ``targets`` (question, 1 + patches); questions with ``at`` = -1 are left out."""
    keep = at >= 0
    rows = torch.arange(len(at))[keep]
    mass = (probs[rows, at[keep]] * targets[keep]).sum(-1)
    return -torch.log(mass + 1e-6).mean() if len(rows) else probs.sum() * 0


def guide_loss(trainee: Trainee, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Attention guidance of the question encoder: in its first layer, head 0 at the colour
    word attends to the patches of that colour and head 1 at the shape word to the patches of
    that shape; in its second, head 0 at ``[CLS]`` to the patches of the object asked about
    (where no patch qualifies, to the image's ``[CLS]`` token: "nothing here"), and head 1 at
    ``[CLS]`` is a counter: it spreads its attention evenly over the image's ``[CLS]`` and the
    centre patch of each object asked about, so the share left on ``[CLS]``, 1 / (1 + count),
    carries the count into the question's encoding."""
    labels = batch["patch_labels"][batch["rows"]]
    colour = labels[..., 0] == batch["colours"][:, None]
    shape = labels[..., 1] == batch["shapes"][:, None]
    both = shape & (colour | (batch["colours"] == 0)[:, None])

    def with_none(mask: torch.Tensor) -> torch.Tensor:
        return torch.cat([~mask.any(1, keepdim=True), mask], dim=1).float()

    first = trainee.attention[0]
    loss = _attention_mass(first[:, 0], batch["colour_at"], with_none(colour))
    if first.shape[1] > 1:
        loss = loss + _attention_mass(first[:, 1], batch["shape_at"], with_none(shape))
    if 1 in trainee.attention:
        second = trainee.attention[1]
        cls = torch.zeros_like(batch["shape_at"])
        loss = loss + _attention_mass(second[:, 0], cls, with_none(both))
        if second.shape[1] > 1:
            centres = torch.cat([torch.ones_like(both[:, :1]), both & (labels[..., 3] == 1)], 1)
            target = centres.float() / centres.sum(1, keepdim=True)
            counted = -(target * torch.log(second[:, 1, 0] + 1e-6)).sum(1).mean()
            loss = loss + counted + (target * torch.log(target + 1e-12)).sum(1).mean()
    return loss


def _see(trainee: Trainee, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The vision tower's output for the batch and the patch probe's summed cross-entropy."""
    images = trainee.blip.vision_model(pixel_values=batch["pixel_values"]).last_hidden_state
    probe = trainee.probe(images[:, 1:]).split(PATCH_CLASSES, dim=-1)
    labels = batch["patch_labels"]
    dense = sum(
        F.cross_entropy(logits.flatten(0, 1), labels[..., i].flatten())
        for i, logits in enumerate(probe)
    )
    return images, torch.as_tensor(dense)


def see_loss(trainee: Trainee, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The patch probe's loss alone: the first phase, which trains the vision tower."""
    return _see(trainee, batch)[1]


def answer_loss(trainee: Trainee, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of the answer decoder for ``[DEC] answer [SEP]``, the first token
    weighted most (each image is encoded once for all its questions), plus the patch probe's
    cross-entropies and the attention guidance (:func:`guide_loss`)."""
    model = trainee.blip
    images, dense = _see(trainee, batch)
    images = images[batch["rows"]]
    image_mask = torch.ones(images.shape[:-1], dtype=torch.long)
    questions = model.text_encoder(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        encoder_hidden_states=images,
        encoder_attention_mask=image_mask,
    ).last_hidden_state
    answers = batch["answers"]
    start = torch.full_like(answers, model.decoder_start_token_id)
    logits = model.text_decoder(
        input_ids=torch.stack([start, answers], dim=1),
        encoder_hidden_states=questions,
        encoder_attention_mask=batch["attention_mask"],
    ).logits
    end = torch.full_like(answers, model.config.text_config.sep_token_id)
    answer = F.cross_entropy(logits[:, 0], answers) + 0.2 * F.cross_entropy(logits[:, 1], end)
    guide = guide_loss(trainee, batch)
    count = F.cross_entropy(trainee.counter(questions[:, 0]), batch["counts"])
    parts = {"answer": answer, "dense": dense, "guide": guide, "count": count}
    trainee.parts = {name: float(value.detach()) for name, value in parts.items()}
    return answer + 0.5 * (dense + guide + count)


# --- training and evaluation ----------------------------------------------------------------


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
    """Train the VQA model into ``out``; returns training stats and held-out quality.

    ``steps`` (the question phase) and other :data:`PLANS` entries can be overridden;
    ``eval_n`` held-out scenes are evaluated (default: 1000 at full size, none at smoke).
    """
    from factcap.backends.hf_blip import _mask_padded_questions

    run = TrainingRun.start(
        PLANS, out, size=size, seed=seed, steps=steps, eval_n=eval_n, log=log, **plan_overrides
    )
    plan = run.plan
    processor = build_processor(run.out)
    model = build_model(processor.tokenizer, plan)
    _mask_padded_questions(model.text_decoder)  # train as the backend reads padded batches
    grid = IMAGE_SIZE // plan["patch"]
    trainee = Trainee(model)
    after = plan["see_steps"] * plan["batch"]  # the questions are about scenes not yet seen
    stats = run.fit(
        trainee,
        vision_phase(plan["batch"], seed, grid, plan, see_loss),
        Phase(
            Batches(processor.tokenizer, plan["batch"], seed, grid, start=after),
            plan["steps"],
            plan["lr"],
            answer_loss,
        ),
    )
    model.save_pretrained(run.out)
    processor.save_pretrained(run.out)
    return run.finish(stats, evaluate)


def held_out_questions(n: int, seed: int = 0) -> list[tuple[Scene, Question, bool]]:
    """``(scene, question, answer)`` over ``n`` ``test`` scenes: per scene and form one
    question of a random answer, then per form as many yes as no (the surplus dropped)."""
    rng = random.Random(f"vqa-eval/{seed}")
    by_form: dict[tuple[str, bool], list[tuple[Scene, Question, bool]]] = {}
    for scene in world.scenes(n, seed=seed, split="test"):
        for form in FORMS:
            answer = rng.random() < 0.5
            q = draw_question(scene, form, answer, rng) or draw_question(
                scene, form, not answer, rng
            )
            if q is not None:
                by_form.setdefault((form, truth(scene, q)), []).append((scene, q, truth(scene, q)))
    picked = []
    for form in FORMS:
        yes, no = by_form.get((form, True), []), by_form.get((form, False), [])
        k = min(len(yes), len(no))
        picked += yes[:k] + no[:k]
    return picked


def evaluate(out: Path, n: int = 1000, seed: int = 0, batch: int = 64) -> dict[str, Any]:
    """Held-out quality of the VQA model in ``out`` through the real backend
    (``registry.build("vqa", "hf:<out>")`` and ``yes_probability``) on balanced questions
    about ``n`` ``test`` scenes: accuracy of ``P(yes) >= 0.5`` per form and per tag (``yes``,
    ``hard`` / ``easy`` negatives), and the mean P(yes) of true and of false questions."""
    from factcap.backends import registry

    vqa = registry.build("vqa", f"hf:{out}", device="cpu", dtype="float32")
    items = held_out_questions(n, seed)
    start = time.perf_counter()
    probs: list[float] = []
    for i in range(0, len(items), batch):
        chunk = items[i : i + batch]
        probs += vqa.yes_probability(
            [s.render() for s, _, _ in chunk], [q.text for _, q, _ in chunk]
        )
    report: dict[str, Any] = {"n_scenes": n, "questions": len(items)}
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["accuracy"] = _accuracy(items, probs, lambda q: "all")["all"]
    report["by_form"] = _accuracy(items, probs, lambda q: q.form)
    report["by_tag"] = _accuracy(items, probs, lambda q: q.tag)
    for answer in (True, False):
        ps = [p for (_, _, a), p in zip(items, probs, strict=True) if a is answer]
        report[f"mean_p_yes_{'true' if answer else 'false'}"] = round(float(np.mean(ps)), 4)
    return report


def _accuracy(
    items: Sequence[tuple[Scene, Question, bool]],
    probs: Sequence[float],
    key: Callable[[Question], str],
) -> dict[str, dict[str, float]]:
    groups: dict[str, list[bool]] = {}
    for (_, q, answer), p in zip(items, probs, strict=True):
        groups.setdefault(key(q), []).append((p >= 0.5) == answer)
    return {k: {"accuracy": round(float(np.mean(v)), 4), "n": len(v)} for k, v in groups.items()}
