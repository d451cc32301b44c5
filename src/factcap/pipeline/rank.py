"""Stage ``rank``: score every proposal against its image and pass only the best on.

With ``proposals: {rank_by: clip_score | vqa_score, keep_top: K, min_score: X}`` each
proposal gets a score against the image it describes (a 3D asset's proposal: its view):

- ``clip_score``: CLIP-S, ``2.5 · max(cos, 0)``, the scale of ``factcap evaluate``'s
  ``clip_score``; a text longer than the embedder's context is split into pieces that fit
  and its cosine is the mean of theirs (:mod:`factcap.text.fit`), never truncated;
- ``vqa_score``: the VQA model's P(yes) for 'Does this figure show "<caption>"?' (VQAScore).

The captioners' proposals are ranked by score; those among the ``keep_top`` best with a score
of at least ``min_score`` are ``kept`` and go on to the claims and compose prompts. If none
reaches ``min_score`` the best one is kept anyway and the record says so (a caption is still
written, from the best draft). The alt-text (:mod:`factcap.pipeline.alt_text`) is scored but
always kept: it may be unrelated to the pixels and still carry a name, and its claims are
checked one by one. The stage runs before OCR, whose text is not a caption. Every proposal
stays in the record with its ``score`` and ``kept``.

>>> from factcap.schema import Proposal
>>> props = [Proposal("a", "x"), Proposal("b", "y"), Proposal("c", "z")]
>>> choose_kept(props, [0.2, 0.9, 0.5], keep_top=2, min_score=None)
[False, True, True]
>>> choose_kept(props, [0.2, 0.1, 0.3], keep_top=None, min_score=0.5)  # none passes: best kept
[False, False, True]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from factcap.config import Config, ProposalsConfig
from factcap.pipeline.alt_text import ALT_TEXT
from factcap.pipeline.check import ask_once
from factcap.pipeline.stage import BoundModel, Stage, StageContext
from factcap.pipeline.work import Work, call_batched, live
from factcap.prompts import caption_question
from factcap.schema import Proposal
from factcap.text.fit import embed_split_texts

#: CLIP-S's weight (Hessel et al., 2021), as in :mod:`factcap.metrics.clip_score`.
CLIP_S_WEIGHT = 2.5


#: The config section that decides what this stage writes (compared on ``--resume``).
SETTINGS = ("proposals",)


def stages(config: Config) -> list[Stage]:
    """The ``rank`` stage, with the ranker's model slot, when ``proposals.rank_by`` is set."""
    role = config.proposals.ranker_role()
    failure = "ranking proposals with {model} failed"
    return [Stage("rank", role, run, fails_as=failure, timing="rank:{model}")] if role else []


def run(batch: Sequence[Work], model: BoundModel | None, context: StageContext) -> None:
    """Score the live items' proposals and mark which are kept (module docstring)."""
    items = [w for w in live(batch) if w.record.proposals]
    if model is None or not items:
        return
    cfg = context.config.proposals
    jobs = [(w, p, w.view_image(p.view)) for w in items for p in w.record.proposals]
    scorer = score_clip if cfg.rank_by == "clip_score" else score_vqa
    scores = scorer(model, [p.text for _, p, _ in jobs], [img for _, _, img in jobs])
    for (_, proposal, _), score in zip(jobs, scores, strict=True):
        proposal.score = round(score, 4) if math.isfinite(score) else None
    for w in items:
        _keep(w, cfg)


def score_clip(model: BoundModel, texts: Sequence[str], images: Sequence[Any]) -> list[float]:
    """CLIP-S of each text with its image; each distinct image (object) embedded once."""
    embedder, size = model
    distinct = list({id(img): img for img in images}.values())
    vectors = np.asarray(call_batched(embedder.embed_images, size, distinct), dtype=np.float64)
    row = {id(img): i for i, img in enumerate(distinct)}
    embedded = embed_split_texts([t if t.strip() else "." for t in texts], embedder)
    return [
        CLIP_S_WEIGHT * max(float(text.vector @ vectors[row[id(img)]]), 0.0)
        for text, img in zip(embedded, images, strict=True)
    ]


def score_vqa(model: BoundModel, texts: Sequence[str], images: Sequence[Any]) -> list[float]:
    """VQAScore of each text with its image (each distinct pair asked once)."""
    vqa, size = model
    return ask_once(
        vqa,
        size,
        [(img, caption_question(t)) for t, img in zip(texts, images, strict=True)],
    )


def choose_kept(
    proposals: Sequence[Proposal],
    scores: Sequence[float | None],
    keep_top: int | None,
    min_score: float | None,
) -> list[bool]:
    """Which of ``proposals`` are kept: the ``keep_top`` best (ties: the earlier) among those
    scoring at least ``min_score``; the best alone when none does. A missing score ranks last
    and never passes ``min_score``."""
    value = [s if s is not None and math.isfinite(s) else -math.inf for s in scores]
    order = sorted(range(len(proposals)), key=lambda i: (-value[i], i))
    passing = [i for i in order if min_score is None or value[i] >= min_score]
    chosen = set((passing or order[:1])[: keep_top or len(order)])
    return [i in chosen for i in range(len(proposals))]


def _keep(work: Work, cfg: ProposalsConfig) -> None:
    ranked = [p for p in work.record.proposals if p.model != ALT_TEXT]
    if not ranked:
        return
    kept = choose_kept(ranked, [p.score for p in ranked], cfg.keep_top, cfg.min_score)
    for proposal, keep in zip(ranked, kept, strict=True):
        proposal.kept = keep
    if cfg.min_score is not None and not any(
        p.score is not None and p.score >= cfg.min_score for p in ranked
    ):
        best = next(p for p, keep in zip(ranked, kept, strict=True) if keep)
        work.record.notes.append(
            f"rank: no proposal reached min_score {cfg.min_score}; kept the best "
            f"({best.model}, {best.score})"
        )
