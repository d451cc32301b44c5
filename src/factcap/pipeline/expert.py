"""Stage ``expert``: the detector as one more proposer, for what no captioner said.

With ``expert.enabled``, the detector looks for every name of the expert's vocabulary
(:class:`~factcap.config.ExpertConfig`) on each image, after the claims are made. A name
found with a score of at least ``expert.threshold`` that no object claim mentions becomes an
object claim of ``origin: expert`` ("There is a dog."), at most ``max_per_image`` of them,
the best first, each with one attribute claim per ``expert.attributes`` whose value the VQA
model picks among the attribute's values (``evidence["choose"]``). The ``detect`` and
``check`` stages then treat them like any claim: the detector's box and the VQA model's yes
are both needed; compose is offered the ones that hold, and never sees the others.

README: "Experts and corrections".
"""

from __future__ import annotations

from collections.abc import Sequence

from factcap.config import Config
from factcap.pipeline.check import EXPERT
from factcap.pipeline.stage import BoundModel, Stage, StageContext
from factcap.pipeline.work import Work, call_batched, live
from factcap.schema import Claim, ClaimKind
from factcap.text.english import singular

SETTINGS = ("expert",)


def stages(config: Config) -> list[Stage]:
    """The ``expert`` stage, when it is enabled and a detector is configured."""
    if not (config.expert.enabled and config.verify.enabled and config.detector):
        return []
    return [Stage("expert", "detector", run, fails_as="detector {model} failed (expert)")]


def run(batch: Sequence[Work], model: BoundModel | None, context: StageContext) -> None:
    """The stage function: :func:`add_expert_claims` with the config's expert settings."""
    if model is not None:
        add_expert_claims(batch, model, context.config)


def _words(phrase: str) -> frozenset[str]:
    return frozenset(singular(w) for w in phrase.lower().split())


def mentioned(name: str, claims: Sequence[Claim]) -> bool:
    """Whether an object claim already speaks of ``name``: its subject holds every word of
    the name, or the name every word of its subject ("dog" and "brown dog" are one thing;
    "red circle" and "blue circle" are two).

    >>> mentioned("dog", [Claim("object", "There are dogs.", "brown dogs")])
    True
    >>> mentioned("red circle", [Claim("object", "There is a blue circle.", "blue circle")])
    False
    """
    name_words = _words(name)
    return any(
        name_words <= _words(c.subject) or _words(c.subject) <= name_words
        for c in claims
        if c.kind in (ClaimKind.OBJECT, ClaimKind.COUNT) and c.subject
    )


def expert_claims(name: str, score: float, attributes: dict[str, Sequence[str]]) -> list[Claim]:
    """The object claim of a name the expert found, and one claim per attribute to choose.

    >>> [c.text for c in expert_claims("red circle", 0.9, {"size": ("small", "large")})]
    ['There is a red circle.', 'The red circle is small.']
    """
    article = "an" if name[:1].lower() in "aeiou" else "a"
    claims = [
        Claim(
            ClaimKind.OBJECT,
            f"There is {article} {name}.",
            name,
            evidence={"expert_score": round(score, 4)},
            origin=EXPERT,
        )
    ]
    for attribute, values in attributes.items():
        claims.append(
            Claim(
                ClaimKind.ATTRIBUTE,
                f"The {name} is {values[0]}.",
                name,
                f"Is the {name} {values[0]}?",
                evidence={"choose": attribute},
                origin=EXPERT,
            )
        )
    return claims


def add_expert_claims(batch: Sequence[Work], detector: BoundModel, config: Config) -> None:
    """Look for the vocabulary on every view of the live items with claims and add the
    claims of what was found and not yet mentioned (module docstring)."""
    cfg = config.expert
    items = [w for w in live(batch) if w.record.claims]
    if not items:
        return
    names = cfg.names()
    sets = config.verify.sets() if config.verify.alternatives else {}
    attributes = {a: sets[a] for a in cfg.attributes if a in sets}
    groups = [
        names[i : i + cfg.queries_per_call] for i in range(0, len(names), cfg.queries_per_call)
    ]
    asks = [(w, image, group) for w in items for image in w.images for group in groups]
    found = call_batched(
        detector.backend.detect,
        detector.batch_size,
        [image for _, image, _ in asks],
        [group for _, _, group in asks],
    )
    best: dict[int, dict[str, float]] = {}
    for (w, _, _), detections in zip(asks, found, strict=True):
        scores = best.setdefault(id(w), {})
        for det in detections:
            if det.query in names and float(det.score) >= cfg.threshold:
                scores[det.query] = max(scores.get(det.query, 0.0), float(det.score))
    for w in items:
        scores = best.get(id(w), {})
        new = [
            n for n in sorted(scores, key=lambda n: -scores[n]) if not mentioned(n, w.record.claims)
        ]
        for name in new[: cfg.max_per_image]:
            w.record.claims.extend(expert_claims(name, scores[name], attributes))
