"""Zero-shot detectors from transformers: Grounding DINO and OWL-ViT / OWLv2.

Each ``detect`` call runs every query of an image through one forward pass (Grounding DINO
needs more only when an image's queries overflow its text encoder), the images of a call
batched together (Grounding DINO's only where their sizes let them share a batch without
much padding, see :class:`GroundingDinoDetector`), and returns boxes in the pixel coordinates
of the original images, clipped to their bounds, each labelled with exactly one of the query
strings it was given.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from factcap.backends.hf_common import HFModel
from factcap.backends.options import take_options
from factcap.roles import Detection

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

# Grounding DINO splits its prompt into phrases at these characters.
_DELIMITERS = re.compile(r"[.?]+")
_SPACES = re.compile(r"\s+")

Phrase = tuple[str, str]  # (normalised phrase, the query it answers)
Prompt = tuple[str, list[tuple[int, int, str]]]  # (text, per phrase: start, end, query)


def _threshold(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return value


def _clip_box(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
    y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def size_groups(sizes: Sequence[tuple[int, int]], max_padding: float) -> list[list[int]]:
    """Indices of ``sizes`` (``(height, width)`` per image) grouped into batches in each of
    which at most ``max_padding`` of the pixels are padding, once its images are padded to
    its largest height and width.

    Images are taken in order of aspect ratio and a batch grows while it stays within the
    bound; each batch lists its indices in order, batches in order of their first index.
    ``max_padding=1.0`` keeps every image in one batch; 0 splits by exact size.

    >>> size_groups([(800, 1200), (800, 800), (800, 1201), (800, 800)], 0.1)
    [[0, 2], [1, 3]]
    >>> size_groups([(800, 1200), (800, 800)], 1.0)
    [[0, 1]]
    """
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i][1] / sizes[i][0], i))
    groups: list[list[int]] = []
    for i in order:
        if groups and _padding_share([sizes[j] for j in [*groups[-1], i]]) <= max_padding:
            groups[-1].append(i)
        else:
            groups.append([i])
    return sorted(sorted(group) for group in groups)


def _padding_share(sizes: Sequence[tuple[int, int]]) -> float:
    """The share of padding pixels once every image is padded to the largest height and width."""
    padded = len(sizes) * max(h for h, _ in sizes) * max(w for _, w in sizes)
    return 1.0 - sum(h * w for h, w in sizes) / padded


def _check_batch(images: Sequence[Image.Image], queries: Sequence[Sequence[str]]) -> None:
    if len(images) != len(queries):
        raise ValueError(f"got {len(images)} images but {len(queries)} query lists")
    for qs in queries:
        if isinstance(qs, str):
            raise TypeError("queries[i] must be a list of strings, not a single string")


class _ZeroShotDetector(HFModel):
    """Shared loading and options of the zero-shot detectors; every option is a threshold
    in [0, 1] and ``box_threshold`` is one of them."""

    model_class = "AutoModelForZeroShotObjectDetection"
    processor_class = "AutoProcessor"
    defaults: dict[str, float] = {"box_threshold": 0.1}

    def __init__(
        self, location: str, device: str | None = None, dtype: str | None = None, **options: float
    ):
        opts = take_options(type(self).__name__, options, self.defaults)
        opts = {name: _threshold(name, value) for name, value in opts.items()}
        super().__init__(location, device=device, dtype=dtype)
        self.options = opts
        self.box_threshold = opts["box_threshold"]


class GroundingDinoDetector(_ZeroShotDetector):
    """Grounding DINO (and MM-Grounding-DINO): open-vocabulary boxes for text phrases.

    The queries of one image become one prompt (``"a cat. a red car."``); prompts of
    different lengths are padded together. Each box is labelled with the query whose tokens
    score highest for it; its score is that query's best token probability.

    The processor resizes every image to a shortest edge of 800 (longest at most 1333), so
    images of different aspect ratios differ in size, and a batch pads them all to its largest
    height and width: a square photo batched with a 3:2 one costs as much as a second 3:2 photo
    (on a CPU a padded pixel costs what a real one does), and the padding shifts the smaller
    image's features, so its detections depend on its batch-mates. So a call's images are
    split into batches by :func:`size_groups`: at most ``max_padding`` of a forward's pixels
    are padding. With the default 0.1, images of one aspect ratio share a forward, and an
    image's detections are those it gets alone (to float rounding) unless it is batched with
    one of a nearly equal size.

    The text encoder reads at most ``max_text_len`` tokens (256 for the released models).
    Queries that do not fit one prompt are split into consecutive chunks that do, and the
    batch runs one forward per chunk round: every image's first chunk in one call, the
    second chunks of the images that have one in the next, and so on; the detections are
    merged. A query is never cut off silently (only a single query longer than the whole
    limit is truncated, with a warning).

    Options: ``box_threshold`` (default 0.3) keeps boxes whose best token probability exceeds
    it; ``text_threshold`` (default 0.25) is the least probability the labelling query must
    reach; ``max_padding`` (default 0.1; 1.0: one padded forward for the whole call) is the
    share of a forward's pixels that may be padding.

    >>> from PIL import Image
    >>> from factcap.backends import registry
    >>> from factcap.examples import example_paths
    >>> photo = Image.open(example_paths()[0]).convert("RGB")
    >>> det = registry.build("detector", "tiny:grounding_dino")
    >>> len(det.detect([photo], [["a cat", "a remote control"]]))  # one list per image
    1

    With the real checkpoint::

        det = GroundingDinoDetector("IDEA-Research/grounding-dino-tiny")
        det.detect([image], [["a cat", "a remote control"]])
    [[Detection(query='a cat', score=0.47, box=(12.3, 51.9, 316.9, 472.4)), ...]]
    """

    defaults: dict[str, float] = {"box_threshold": 0.3, "text_threshold": 0.25, "max_padding": 0.1}

    def __init__(
        self, location: str, device: str | None = None, dtype: str | None = None, **options: float
    ):
        super().__init__(location, device=device, dtype=dtype, **options)
        self.text_threshold = self.options["text_threshold"]
        self.max_padding = self.options["max_padding"]
        self.max_text_len = int(getattr(self.model.config, "max_text_len", 256))

    @staticmethod
    def _phrases(queries: Sequence[str]) -> list[Phrase]:
        """``(phrase, query)`` for each distinct phrase, delimiters removed, in query order."""
        phrases: list[Phrase] = []
        seen: set[str] = set()
        for query in queries:
            phrase = _SPACES.sub(" ", _DELIMITERS.sub(" ", query)).strip().lower()
            if phrase and phrase not in seen:
                seen.add(phrase)
                phrases.append((phrase, query))
        return phrases

    def _chunks(self, phrases: list[Phrase]) -> list[list[Phrase]]:
        """``phrases`` cut into consecutive runs whose prompt fits ``max_text_len`` tokens."""
        if not phrases:
            return []
        tokenizer = self.processor.tokenizer
        # Each phrase costs its own tokens plus its "." (the prompt's words are split on spaces
        # and punctuation, so a phrase tokenizes the same alone as inside the prompt).
        encoded = tokenizer([f"{phrase}." for phrase, _ in phrases], add_special_tokens=False)
        costs = [len(ids) for ids in encoded["input_ids"]]
        budget = self.max_text_len - tokenizer.num_special_tokens_to_add()
        chunks: list[list[Phrase]] = [[]]
        used = 0
        for item, cost in zip(phrases, costs, strict=True):
            if cost > budget:
                log.warning("query %r is over %d tokens: truncated", item[1], self.max_text_len)
            if chunks[-1] and used + cost > budget:
                chunks.append([])
                used = 0
            chunks[-1].append(item)
            used += cost
        return chunks

    @staticmethod
    def _prompt(phrases: Sequence[Phrase]) -> Prompt:
        """The prompt for ``phrases`` and, per phrase, its character span and query."""
        spans: list[tuple[int, int, str]] = []
        pos = 0
        for phrase, query in phrases:
            spans.append((pos, pos + len(phrase), query))
            pos += len(phrase) + 2  # ". "
        return ". ".join(p for p, _ in phrases) + ("." if phrases else ""), spans

    def detect(
        self, images: Sequence[Image.Image], queries: Sequence[Sequence[str]]
    ) -> list[list[Detection]]:
        """Boxes per image for its queries, in original-image pixels (see the class doc)."""
        _check_batch(images, queries)
        results: list[list[Detection]] = [[] for _ in images]
        chunks = [self._chunks(self._phrases(qs)) for qs in queries]
        for round_ in range(max(map(len, chunks), default=0)):
            prompts = {i: self._prompt(c[round_]) for i, c in enumerate(chunks) if len(c) > round_}
            self._detect_round(images, prompts, results)
        for dets in results:
            dets.sort(key=lambda d: -d.score)
        return results

    def _detect_round(
        self,
        images: Sequence[Image.Image],
        prompts: dict[int, Prompt],
        results: list[list[Detection]],
    ) -> None:
        """``images[i]`` asked ``prompts[i]``, one forward per :func:`size_groups` batch;
        appends to ``results[i]``."""
        active = list(prompts)
        batch = self.processor(
            images=[images[i] for i in active],
            text=[prompts[i][0] for i in active],
            padding=True,
            truncation=True,
            max_length=self.max_text_len,
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        offsets = batch.pop("offset_mapping")
        input_ids = batch["input_ids"]
        # token -> index of the phrase it belongs to (-1: special, delimiter or padding)
        phrase_of = torch.full(input_ids.shape, -1, dtype=torch.long)
        for row, i in enumerate(active):
            spans = prompts[i][1]
            for t, (start, end) in enumerate(offsets[row].tolist()):
                if end <= start:
                    continue
                for k, (s0, s1, _) in enumerate(spans):
                    if s0 <= start and end <= s1:
                        phrase_of[row, t] = k
                        break
            missing = len(spans) - int(phrase_of[row].max()) - 1
            if missing > 0:  # _chunks sizes prompts to fit: this would be a tokenizer surprise
                log.warning(
                    "prompt for image %d is over %d tokens: %d queries left out",
                    i,
                    self.max_text_len,
                    missing,
                )

        mask = batch["pixel_mask"]  # (batch, height, width): 1 on the image, 0 on padding
        sizes = list(zip(mask.any(2).sum(1).tolist(), mask.any(1).sum(1).tolist(), strict=True))
        for rows in size_groups(sizes, self.max_padding):
            height = max(sizes[row][0] for row in rows)
            width = max(sizes[row][1] for row in rows)
            group = {key: value[rows] for key, value in batch.items()}
            # the processor pads at the bottom and right: cropping gives this group's own batch
            group["pixel_values"] = group["pixel_values"][..., :height, :width]
            group["pixel_mask"] = group["pixel_mask"][..., :height, :width]
            self._forward(
                images, [(row, active[row]) for row in rows], group, prompts, phrase_of, results
            )

    def _forward(
        self,
        images: Sequence[Image.Image],
        rows: list[tuple[int, int]],
        batch: dict[str, torch.Tensor],
        prompts: dict[int, Prompt],
        phrase_of: torch.Tensor,
        results: list[list[Detection]],
    ) -> None:
        """One forward of ``batch``, whose n-th row is ``rows[n] = (row of phrase_of, image
        index)``; appends each image's labelled boxes to ``results``."""
        with torch.inference_mode():
            outputs = self.model(**self.to_device(batch))
        outputs.logits = outputs.logits.float().cpu()
        outputs.pred_boxes = outputs.pred_boxes.float().cpu()
        # The processor scales the boxes to each original size; its decoded ``text_labels`` are
        # token strings, not our queries, so labels come from phrase_of below instead.
        processed = self.processor.post_process_grounded_object_detection(
            outputs,
            input_ids=batch["input_ids"],
            threshold=self.box_threshold,
            text_threshold=self.text_threshold,
            target_sizes=[(images[i].height, images[i].width) for _, i in rows],
        )
        probs = outputs.logits.sigmoid()  # (batch, slots, max_text_len)
        kept_slots = probs.amax(-1) > self.box_threshold  # the processor's own selection

        for n, (row, i) in enumerate(rows):
            spans = prompts[i][1]
            seq = phrase_of[row]
            p = probs[n][kept_slots[n]][:, : seq.shape[0]]  # (boxes, tokens)
            member = seq[:, None] == torch.arange(len(spans))[None, :]  # (tokens, phrases)
            # per kept box, the best token probability of each phrase: (boxes, phrases)
            per_phrase = torch.where(member[None], p[:, :, None], 0.0).amax(1)
            scores, best = per_phrase.max(-1)
            boxes = processed[n]["boxes"]
            width, height = images[i].width, images[i].height
            for score, k, box in zip(scores.tolist(), best.tolist(), boxes.tolist(), strict=True):
                if score <= self.text_threshold or score <= self.box_threshold:
                    continue
                results[i].append(
                    Detection(spans[k][2], float(score), _clip_box(box, width, height))
                )


class OwlDetector(_ZeroShotDetector):
    """OWLv2 and OWL-ViT: open-vocabulary boxes, one class-embedding per query.

    Query lists of different lengths are padded to the same count (the padding queries are
    masked out), so a batch is a single forward call. OWLv2 pads each image to a square before
    resizing; boxes are mapped back to the original image and clipped to its bounds (a box
    lying wholly in the padding is dropped).

    Options: ``box_threshold`` (default 0.1) keeps boxes whose query probability exceeds it.

    >>> from PIL import Image
    >>> from factcap.backends import registry
    >>> from factcap.examples import example_paths
    >>> photo = Image.open(example_paths()[0]).convert("RGB")
    >>> det = registry.build("detector", "tiny:owlv2")
    >>> len(det.detect([photo], [["a cat", "a remote control"]]))
    1

    With the real checkpoint::

        det = OwlDetector("google/owlv2-base-patch16-ensemble")
        det.detect([image], [["a cat", "a remote control"]])
    [[Detection(query='a cat', score=0.71, box=(11.0, 53.2, 318.0, 470.9)), ...]]
    """

    defaults: dict[str, float] = {"box_threshold": 0.1}

    def detect(
        self, images: Sequence[Image.Image], queries: Sequence[Sequence[str]]
    ) -> list[list[Detection]]:
        """Boxes per image for its queries, in original-image pixels (see the class doc)."""
        _check_batch(images, queries)
        results: list[list[Detection]] = [[] for _ in images]
        active = [i for i, qs in enumerate(queries) if len(qs) > 0]
        if not active:
            return results

        texts = [list(queries[i]) for i in active]
        batch = self.processor(
            images=[images[i] for i in active], text=texts, truncation=True, return_tensors="pt"
        )
        with torch.inference_mode():
            outputs: Any = self.model(**self.to_device(batch))
        logits = outputs.logits.float().cpu()  # (batch, boxes, max queries)
        counts = torch.tensor([len(t) for t in texts])
        padding = torch.arange(logits.shape[-1])[None, :] >= counts[:, None]
        outputs.logits = logits.masked_fill(padding[:, None, :], float("-inf"))
        outputs.pred_boxes = outputs.pred_boxes.float().cpu()
        sizes = [(images[i].height, images[i].width) for i in active]
        processed = self.processor.post_process_grounded_object_detection(
            outputs, threshold=self.box_threshold, target_sizes=sizes
        )
        for row, i in enumerate(active):
            out = processed[row]
            width, height = images[i].width, images[i].height
            for score, label, box in zip(
                out["scores"].tolist(), out["labels"].tolist(), out["boxes"].tolist(), strict=True
            ):
                clipped = _clip_box(box, width, height)
                if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                    continue
                results[i].append(Detection(texts[row][label], float(score), clipped))
            results[i].sort(key=lambda d: -d.score)
        return results
