"""Stages ``regions:*`` (``--regions``): a verified caption for each object's region, the
spatial relations between regions, and the caption graph.

Each region is a small work item of its own (a crop with its own record), so it goes through
the same stage functions as a whole image:

1. regions: the boxes of the supported object claims, after non-maximum suppression (largest
   first, IoU above ``regions.iou_nms`` dropped), at least ``regions.min_area`` of the image,
   up to ``regions.max``; each cropped with ``regions.padding`` of its size on every side,
   clipped to the image (:mod:`factcap.boxes`);
2. ``regions:caption:<i>``: every captioner captions every crop;
3. ``regions:claims``: the LLM extracts the claims of each region's captions (all regions of
   the batch in one call), and the region gets one more object claim, its label ("There is a
   dog.");
4. ``regions:check``: the VQA model checks the claims on the crop (no detector on crops: the
   VQA question decides, as for attributes). A region whose label claim is refuted is dropped,
   and the record's notes say so;
5. ``regions:compose``: the LLM writes each region's caption in the ``region`` style (refuted
   content cut as for whole images); a region caption describes its verified object, so only
   its sentences that name the label (every content word of it, e.g. "green" and "triangle")
   and no other object that the crop's checks did not support are kept; with none left, the
   first such sentence of the region's drafts, else "A <label>." (the region's notes say so)
   (:func:`focus`). Then,, for pairs of regions with different labels
   (largest first, up to ``regions.max_relations``), a sentence stating their spatial relation
   (:func:`factcap.boxes.relations`), which must name both labels or becomes "The dog is left
   of the sofa.";
6. ``regions:relations``: the VQA model checks each relation ("Is the dog left of the sofa?")
   on the crop of the pair's union box; then the record gets ``regions`` and ``graph``
   (:func:`build_graph`).

3D assets get no regions (a note says so): their boxes belong to different views.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from factcap.boxes import area as box_area
from factcap.boxes import normalised, pad, relations, suppress, union_box
from factcap.config import Config, RegionsConfig
from factcap.pipeline import claims as claims_stage
from factcap.pipeline import compose as compose_stage
from factcap.pipeline import propose
from factcap.pipeline.check import ask_once, check_claims
from factcap.pipeline.parsing import clean_caption
from factcap.pipeline.stage import BoundModel, Stage, StageContext
from factcap.pipeline.work import Work, failing, live
from factcap.prompts import load_prompt, quote_data, render
from factcap.prompts.style import description_kind
from factcap.roles import slot
from factcap.schema import Claim, ClaimKind, Record, Verdict
from factcap.text.english import plural
from factcap.text.pieces import split_pieces

#: Keys of ``Work.state`` holding an item's regions and relations between the ``regions:*``
#: stages, as plain JSON-able data (Ray carries ``extra`` as JSON between stages); crops are
#: cut again from the item's image in each stage.
REGIONS = "regions"
RELATIONS = "relations"
#: The caption style of a region.
REGION_STYLE = "region"


@dataclass(slots=True)
class Region:
    """One region in flight: its detector box (pixels), label, detector score, and the crop's
    own work item (proposals, claims, captions)."""

    id: str
    label: str
    box: tuple[float, float, float, float]
    score: float
    crop_box: tuple[int, int, int, int]
    work: Work

    @property
    def caption(self) -> str:
        return self.work.record.captions.get(REGION_STYLE, "")

    def to_data(self) -> dict[str, Any]:
        """The region as plain data (its crop is cut again from the image)."""
        return {
            "id": self.id,
            "label": self.label,
            "box": list(self.box),
            "score": self.score,
            "crop_box": list(self.crop_box),
            "record": self.work.record.to_dict(),
        }

    @classmethod
    def from_data(cls, data: dict[str, Any], image: Any) -> Region:
        crop_box = tuple(int(v) for v in data["crop_box"])
        work = Work.of_image(Record.from_dict(data["record"]), image.crop(crop_box))
        box = tuple(float(v) for v in data["box"])
        return cls(data["id"], data["label"], box, float(data["score"]), crop_box, work)  # type: ignore[arg-type]


@dataclass(slots=True)
class Relation:
    """A spatial relation of region ``a`` to region ``b``, its sentence and its check."""

    a: Region
    b: Region
    relation: str
    also: list[str]
    sentence: str = ""
    verdict: Verdict = Verdict.UNCERTAIN
    score: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def question(self) -> str:
        return f"Is the {self.a.label} {self.relation} the {self.b.label}?"

    def to_data(self) -> dict[str, Any]:
        return {
            "a": self.a.id,
            "b": self.b.id,
            "relation": self.relation,
            "also": list(self.also),
            "sentence": self.sentence,
            "verdict": self.verdict.value,
            "score": self.score,
            "evidence": dict(self.evidence),
        }

    @classmethod
    def from_data(cls, data: dict[str, Any], regions: dict[str, Region]) -> Relation:
        return cls(
            regions[data["a"]],
            regions[data["b"]],
            data["relation"],
            list(data["also"]),
            data["sentence"],
            Verdict(data["verdict"]),
            data["score"],
            dict(data["evidence"]),
        )


#: The config section that decides what this stage writes (compared on ``--resume``).
SETTINGS = ("regions",)


def stages(config: Config) -> list[Stage]:
    """The ``regions:*`` stages when ``regions.enabled`` (``--regions``)."""
    if not config.regions.enabled:
        return []
    vqa = "vqa" if config.vqa is not None else None
    captioning = [
        Stage(
            f"regions:caption:{i}",
            slot("captioner", i),
            run_caption,
            timing="regions:caption:{model}",
        )
        for i in range(len(config.captioners))
    ]
    return [
        *captioning,
        Stage("regions:claims", "llm", run_claims),
        Stage("regions:check", vqa, run_check),
        Stage("regions:compose", "llm", run_compose),
        Stage("regions:relations", vqa, run_relations),
    ]


# --- finding the regions ------------------------------------------------------------------


def candidate_boxes(claims: Sequence[Claim]) -> list[tuple[str, tuple[float, ...], float]]:
    """``(label, box, score)`` of every detector box of the supported object claims."""
    out = []
    for c in claims:
        if c.kind != ClaimKind.OBJECT or c.verdict != Verdict.SUPPORTED:
            continue
        for found in c.evidence.get("detector_boxes") or []:
            box = found.get("box") if isinstance(found, dict) else None
            if isinstance(box, list) and len(box) == 4:
                out.append((c.subject, tuple(float(v) for v in box), float(found.get("score", 0))))
    return out


def find_regions(work: Work, cfg: RegionsConfig) -> list[Region]:
    """The regions of one item (module docstring, step 1), largest first."""
    if work.kind.names_views:
        work.record.notes.append(
            f"regions: not made for a {work.kind.label} (boxes belong to its views)"
        )
        return []
    width, height = work.image.size
    found = [
        (label, box, score)
        for label, box, score in candidate_boxes(work.record.claims)
        if box_area(box) >= cfg.min_area * width * height
    ]
    kept = suppress([box for _, box, _ in found], cfg.iou_nms)[: cfg.max]
    regions = []
    for k, i in enumerate(kept):
        label, box, score = found[i]
        crop_box = pad(box, cfg.padding, (width, height))
        record = Record(id=f"{work.record.id}#r{k}", source=work.record.source)
        crop = Work.of_image(record, work.image.crop(crop_box))
        regions.append(Region(f"r{k}", label, box, score, crop_box, crop))  # type: ignore[arg-type]
    return regions


def regions_of(work: Work, cfg: RegionsConfig) -> list[Region]:
    """The item's regions: found on first use, else rebuilt from what the last stage kept."""
    if REGIONS not in work.state:
        return find_regions(work, cfg)
    return [Region.from_data(d, work.image) for d in work.state[REGIONS]]


@contextmanager
def regions_in(batch: Sequence[Work], cfg: RegionsConfig) -> Iterator[dict[int, list[Region]]]:
    """The regions of the batch's live items (by ``id`` of the item), kept on the items as
    plain data when the block ends."""
    found = {id(w): regions_of(w, cfg) for w in live(batch)}
    try:
        yield found
    finally:
        for w in live(batch):
            w.state[REGIONS] = [r.to_data() for r in found.get(id(w), [])]


def _pairs(batch: Sequence[Work], found: dict[int, list[Region]]) -> list[tuple[Work, Region]]:
    return [(w, r) for w in live(batch) for r in found.get(id(w), []) if r.work.record.ok]


# --- the stages -----------------------------------------------------------------------------


def run_caption(batch: Sequence[Work], model: BoundModel | None, context: StageContext) -> None:
    """Every captioner captions every region's crop."""
    with regions_in(batch, context.config.regions) as found:
        pairs = _pairs(batch, found)
        if model is None or not pairs:
            return
        crops = [r.work for _, r in pairs]
        with failing(crops, f"captioner {model.backend.name} failed"):
            propose.run(crops, model, context)


def label_claim(region: Region) -> Claim:
    """The region's own claim: its object is in the crop."""
    return Claim(ClaimKind.OBJECT, f"There is a {region.label}.", subject=region.label)


def run_claims(batch: Sequence[Work], model: BoundModel | None, context: StageContext) -> None:
    """Claims of each region's captions, plus its label claim first."""
    cfg = context.config
    with regions_in(batch, cfg.regions) as found:
        pairs = _pairs(batch, found)
        if model is None or not pairs:
            return
        crops = [r.work for _, r in pairs]
        with failing(crops, f"LLM {model.backend.name} failed while extracting claims"):
            claims_stage.extract_claims(
                crops,
                model.backend,
                max_new_tokens=cfg.llm.max_new_tokens,
                temperature=cfg.llm.temperature,
                max_claims=cfg.verify.max_claims,
                prompts=cfg.prompts,
            )
        for _, region in pairs:
            own = label_claim(region)
            others = [c for c in region.work.record.claims if c.text.lower() != own.text.lower()]
            region.work.record.claims = [own, *others]


def run_check(batch: Sequence[Work], model: BoundModel | None, context: StageContext) -> None:
    """Check the regions' claims on their crops; drop the regions whose label is refuted."""
    cfg = context.config
    with regions_in(batch, cfg.regions) as found:
        pairs = _pairs(batch, found)
        if pairs:
            crops = [r.work for _, r in pairs]
            with failing(crops, "checking the region's claims failed"):
                check_claims(crops, model, cfg.verify)
        for w in live(batch):
            found[id(w)] = _checked(w, found[id(w)])


def _checked(w: Work, regions: Sequence[Region]) -> list[Region]:
    """The regions that stay: not failed, their label not refuted (the notes say why not)."""
    kept = []
    for region in regions:
        record = region.work.record
        if not record.ok:
            why = record.error.message if record.error else "unknown"
            w.record.notes.append(f"regions: {region.id} ({region.label}) failed: {why}")
        elif record.claims and record.claims[0].verdict == Verdict.REFUTED:
            p = record.claims[0].evidence.get("vqa_p_yes")
            w.record.notes.append(
                f"regions: dropped {region.id} ({region.label}): the VQA model did not "
                f"see a {region.label} in its crop (P(yes) {p})"
            )
        else:
            kept.append(region)
    return kept


def run_compose(batch: Sequence[Work], model: BoundModel | None, context: StageContext) -> None:
    """Each region's caption, then a sentence for each relation."""
    cfg = context.config
    with regions_in(batch, cfg.regions) as found:
        pairs = _pairs(batch, found)
        if model is None or not pairs:
            return
        llm = model.backend
        crops = [r.work for _, r in pairs]
        with failing(crops, f"LLM {llm.name} failed while composing"):
            compose_stage.compose(
                crops,
                llm,
                [REGION_STYLE],
                instruction=None,
                max_new_tokens=cfg.llm.max_new_tokens,
                temperature=cfg.llm.temperature,
                prompts=cfg.prompts,
                styles_known=cfg.style_registry(),
                alt_text=cfg.alt_text,
            )
        for _, region in pairs:
            focus(region)
        if cfg.regions.relations:
            rels = {id(w): pair_relations(found[id(w)], cfg.regions) for w in live(batch)}
            write_sentences([r for found_rels in rels.values() for r in found_rels], llm, cfg)
            for w in live(batch):
                w.state[RELATIONS] = [r.to_data() for r in rels[id(w)]]


def _names(label: str) -> re.Pattern[str] | None:
    words = [w for w in re.findall(r"[\w-]+", label.lower()) if len(w) > 1]
    if not words:
        return None
    return re.compile("".join(rf"(?=.*\b{re.escape(w)}(e?s)?\b)" for w in words), re.I | re.S)


def names_label(text: str, label: str) -> bool:
    """Whether ``text`` names ``label``: every word of it, in any order, singular or plural.

    >>> names_label("Two large green triangles.", "green triangle"), names_label("A green cross.", "green triangle")
    (True, False)
    """
    pattern = _names(label)
    return bool(pattern and pattern.match(text))


def focus(region: Region) -> None:
    """Keep the sentences of the region's caption that name its label (module docstring)."""
    record = region.work.record
    written = record.captions.get(REGION_STYLE, "")
    own = set(re.findall(r"[\w-]+", region.label.lower()))
    unchecked = {
        c.subject
        for c in record.claims
        if c.kind == ClaimKind.OBJECT
        and c.verdict != Verdict.SUPPORTED
        and c.subject
        and not set(re.findall(r"[\w-]+", c.subject.lower())) <= own
    }

    def describes(sentence: str) -> bool:
        return names_label(sentence, region.label) and not any(
            names_label(sentence, other) for other in unchecked
        )

    kept = [s for s in split_pieces(written, "sentences") if describes(s)]
    if kept:
        text = " ".join(kept)
    else:
        refuted = compose_stage.refuted_matchers(record.claims)
        drafts = [
            s
            for p in record.proposals
            for s in split_pieces(p.text, "sentences")
            if describes(s) and not any(m(s) for m in refuted)
        ]
        text = drafts[0] if drafts else f"A {region.label}."
        text = text[:1].upper() + text[1:]
    if text != written:
        record.notes.append(f"regions: kept only what names the {region.label}")
    record.captions[REGION_STYLE] = text


def pair_relations(regions: Sequence[Region], cfg: RegionsConfig) -> list[Relation]:
    """The relation of each pair of regions (largest first), up to ``max_relations``."""
    out: list[Relation] = []
    for i, a in enumerate(regions):
        for b in regions[i + 1 :]:
            if len(out) >= cfg.max_relations:
                return out
            found = relations(a.box, b.box)
            if found and a.label != b.label:
                out.append(Relation(a, b, found[0], found[1:]))
    return out


def write_sentences(found: Sequence[Relation], llm: Any, cfg: Config) -> None:
    """The LLM's sentence for each relation; one that does not name both objects is replaced
    by the plain statement."""
    if not found:
        return
    template = load_prompt("relation", cfg.prompts)
    conversations = [
        [
            {
                "role": "user",
                "content": render(
                    template,
                    proposals=quote_data(
                        [r.a.caption or r.a.label, r.b.caption or r.b.label],
                        [f"the first object ({r.a.label})", f"the second object ({r.b.label})"],
                        "{}",
                    ),
                    verdicts=quote_data([plain_sentence(r)], ["measured"], "{}"),
                ),
            }
        ]
        for r in found
    ]
    try:
        answers = llm.chat(conversations, max_new_tokens=48, temperature=cfg.llm.temperature)
    except Exception as err:  # the plain statements stand; the record says why
        answers = [""] * len(found)
        for r in found:
            r.evidence["sentence"] = f"the LLM failed ({type(err).__name__}): plain statement"
    for relation, answer in zip(found, answers, strict=True):
        text = clean_caption(answer)
        named = all(
            re.search(rf"\b{re.escape(label)}(e?s)?\b", text, re.I)
            for label in (relation.a.label, relation.b.label)
        )
        relation.sentence = text if text and named else plain_sentence(relation)


def plain_sentence(relation: Relation) -> str:
    """ "The dog is left of the sofa." """
    return f"The {relation.a.label} is {relation.relation} the {relation.b.label}."


def run_relations(batch: Sequence[Work], model: BoundModel | None, context: StageContext) -> None:
    """Check each relation on its union crop, then write ``regions`` and ``graph``."""
    cfg = context.config
    items = live(batch)
    regions = {id(w): regions_of(w, cfg.regions) for w in items}
    rels = {
        id(w): [
            Relation.from_data(d, {r.id: r for r in regions[id(w)]})
            for d in w.state.pop(RELATIONS, [])
        ]
        for w in items
    }
    found = [(w, r) for w in items for r in rels[id(w)]]
    if model is not None and found:
        asks = []
        for w, r in found:
            crop_box = pad(union_box(r.a.box, r.b.box), cfg.regions.padding, w.image.size)
            asks.append((w.image.crop(crop_box), r.question))
        try:
            probs = ask_once(model.backend, model.batch_size, asks)
        except Exception as err:  # the relations stay unchecked; the record says why
            probs = [float("nan")] * len(found)
            for w in items:
                w.record.notes.append(f"regions: relation check failed ({type(err).__name__})")
        for (_, r), p in zip(found, probs, strict=True):
            _apply(r, p, cfg)
    for w in items:
        own = regions[id(w)]
        w.record.regions.items = [region_entry(r, w.image.size) for r in own]
        w.record.regions.graph = build_graph(w.record, own, rels[id(w)], w.image.size)
        w.state.pop(REGIONS, None)


def _apply(relation: Relation, p: float, cfg: Config) -> None:
    relation.evidence["vqa_question"] = relation.question
    if p != p:
        relation.evidence["vqa_p_yes"] = None
        return
    relation.score = round(p, 4)
    relation.evidence["vqa_p_yes"] = round(p, 4)
    if p >= cfg.verify.supported_threshold:
        relation.verdict = Verdict.SUPPORTED
    elif p <= cfg.verify.refuted_threshold:
        relation.verdict = Verdict.REFUTED


# --- the record's regions and graph ---------------------------------------------------------


def region_entry(region: Region, size: tuple[int, int]) -> dict[str, Any]:
    """A region as the record lists it."""
    record = region.work.record
    return {
        "id": region.id,
        "box": [round(v, 1) for v in region.box],
        "box_normalised": normalised(region.box, size),
        "label": region.label,
        "caption": region.caption,
        "score": round(region.score, 4),
        "proposals": [p.to_dict() for p in record.proposals],
        "claims": [c.to_dict() for c in record.claims],
        "notes": list(record.notes),
    }


def build_graph(
    record: Record, regions: Sequence[Region], rels: Sequence[Relation], size: tuple[int, int]
) -> dict[str, Any]:
    """The caption graph: the image node, an entity node per region, a composition node per
    label with several regions, a relation node per relation that was not refuted; edges from
    the image to entities (or their composition), from a composition to its entities, and
    from a relation to its two entities.

    >>> from PIL import Image
    >>> rec = Record("i", "i.jpg", captions={"detailed": "Two dogs."})
    >>> crop = lambda: Work.of_image(Record("c", "i.jpg"), Image.new("RGB", (2, 2)))
    >>> regs = [Region("r0", "dog", (0, 0, 5, 5), 0.9, (0, 0, 5, 5), crop()), Region("r1", "dog", (5, 5, 9, 9), 0.8, (5, 5, 9, 9), crop())]
    >>> g = build_graph(rec, regs, [], (10, 10))
    >>> [(n["id"], n["kind"]) for n in g["nodes"]]
    [('image', 'image'), ('composition:dog', 'composition'), ('r0', 'entity'), ('r1', 'entity')]
    >>> [(e["source"], e["target"]) for e in g["edges"]]
    [('image', 'composition:dog'), ('composition:dog', 'r0'), ('composition:dog', 'r1')]
    """
    image_descs = [
        {"text": text, "kind": description_kind(style)}
        for style, text in record.captions.items()
        if text
    ]
    nodes: list[dict[str, Any]] = [
        {
            "id": "image",
            "kind": "image",
            "box": [0.0, 0.0, 1.0, 1.0],
            "label": "",
            "descriptions": image_descs,
        }
    ]
    edges: list[dict[str, str]] = []
    by_label: dict[str, list[Region]] = {}
    for region in regions:
        by_label.setdefault(region.label, []).append(region)
    for label, group in by_label.items():
        if len(group) > 1:
            box = group[0].box
            for other in group[1:]:
                box = union_box(box, other.box)
            node = f"composition:{label}"
            text = f"There are {len(group)} {plural(label)}."
            nodes.append(
                {
                    "id": node,
                    "kind": "composition",
                    "box": normalised(box, size),
                    "label": label,
                    "descriptions": [{"text": text, "kind": "composition"}],
                }
            )
            edges.append({"source": "image", "target": node, "text": plural(label)})
            edges.extend({"source": node, "target": r.id, "text": label} for r in group)
        else:
            edges.append({"source": "image", "target": group[0].id, "text": label})
        for region in group:
            nodes.append(
                {
                    "id": region.id,
                    "kind": "entity",
                    "box": normalised(region.box, size),
                    "label": label,
                    "descriptions": [{"text": region.caption, "kind": "short"}]
                    if region.caption
                    else [],
                }
            )
    for k, r in enumerate(rels):
        if r.verdict == Verdict.REFUTED:
            continue
        node = f"relation:{k}"
        nodes.append(
            {
                "id": node,
                "kind": "relation",
                "box": normalised(union_box(r.a.box, r.b.box), size),
                "label": r.relation,
                "descriptions": [{"text": r.sentence or plain_sentence(r), "kind": "relation"}],
                "verdict": r.verdict.value,
                "score": r.score,
                "also": list(r.also),
                "evidence": dict(r.evidence),
            }
        )
        edges.append({"source": "image", "target": node, "text": r.relation})
        edges.append({"source": node, "target": r.a.id, "text": r.a.label})
        edges.append({"source": node, "target": r.b.id, "text": r.b.label})
    return {"nodes": nodes, "edges": edges}
