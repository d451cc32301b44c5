"""Zero-shot detectors (Grounding DINO, OWLv2) on tiny random-weight checkpoints and real photos.

Random weights say nothing about *what* is found, so these tests check the contract: one
forward per batch, boxes in each original image's pixels, labels that are input queries, and
boxes that agree with the model's raw normalised predictions mapped back by hand.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from PIL import Image

from factcap.backends import registry
from factcap.roles import Detection, Detector
from spies import rejected

pytestmark = pytest.mark.slow


SPECS = {"grounding_dino": "tiny:grounding_dino", "owlv2": "tiny:owlv2"}
ZERO = {
    "grounding_dino": {"box_threshold": 0.0, "text_threshold": 0.0},
    "owlv2": {"box_threshold": 0.0},
}
# Different numbers of queries per image, one duplicate, one with Grounding DINO's delimiters.
QUERIES = [
    ["a cat", "a red car.", "a man?"],
    ["a cup of coffee"],
    ["a dog", "grass", "a dog", "sky"],
]


@pytest.fixture(scope="module")
def images(photos) -> list[Image.Image]:
    """Three real photos of different sizes: landscape, portrait and square."""
    chosen: dict[str, Image.Image] = {}
    for photo in photos:
        chosen.setdefault(_shape(photo), photo)
    if "portrait" not in chosen:  # a real portrait: the middle of a landscape photo
        land = chosen["landscape"]
        width = land.height * 2 // 3
        left = (land.width - width) // 2
        chosen["portrait"] = land.crop((left, 0, left + width, land.height))
    result = [chosen[k] for k in ("landscape", "portrait", "square") if k in chosen]
    assert len(result) >= 2 and len({im.size for im in result}) == len(result)
    return result


def _shape(image: Image.Image) -> str:
    if image.width == image.height:
        return "square"
    return "landscape" if image.width > image.height else "portrait"


@pytest.fixture(scope="module", params=sorted(SPECS))
def family(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def detector(family):
    return registry.build("detector", SPECS[family], **ZERO[family])


def _count_forwards(model: torch.nn.Module) -> tuple[list[int], object]:
    calls = [0]

    def hook(module, args, output):
        calls[0] += 1

    return calls, model.register_forward_hook(hook)


def test_loaded_through_registry(detector, family):
    assert isinstance(detector, Detector)
    assert detector.name == SPECS[family]
    assert (
        type(detector).__name__
        == {"grounding_dino": "GroundingDinoDetector", "owlv2": "OwlDetector"}[family]
    )


def test_detections_inside_original_bounds_and_labelled_with_inputs(detector, images):
    queries = QUERIES[: len(images)]
    results = detector.detect(images, queries)
    assert len(results) == len(images)
    for image, qs, dets in zip(images, queries, results, strict=True):
        assert dets, f"threshold 0 must give detections on a {image.size} photo"
        assert all(isinstance(d, Detection) for d in dets)
        for d in dets:
            assert d.query in qs
            assert 0.0 < d.score <= 1.0
            x0, y0, x1, y1 = d.box
            assert 0 <= x0 <= x1 <= image.width and 0 <= y0 <= y1 <= image.height, (d, image.size)
        assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)


def test_one_forward_per_batch_whatever_the_query_count(detector, images):
    # one size: Grounding DINO would split images of different sizes (next test)
    images = [images[0]] * len(images)
    calls, handle = _count_forwards(detector.model)
    try:
        detector.detect(images, [["a cat"]] * len(images))
        assert calls[0] == 1
        many = [[f"{w} {n}" for w in ("a cat", "a dog", "a car") for n in ("one", "two")]] * len(
            images
        )
        detector.detect(images, many)
        assert calls[0] == 2
        # images without queries are left out of the batch; none with queries: no forward at all
        results = detector.detect(images, [[]] + [["a cat"]] * (len(images) - 1))
        assert calls[0] == 3 and results[0] == [] and all(results[1:])
        assert detector.detect(images, [[] for _ in images]) == [[] for _ in images]
        assert calls[0] == 3
    finally:
        handle.remove()


def test_deterministic_across_calls_and_loads(detector, family, images):
    """The same detections from a second call and from a second detector loaded from the same
    checkpoint (no dropout left on, no weight initialised at load), order included."""
    queries = QUERIES[: len(images)]
    first = detector.detect(images, queries)
    assert all(first), "threshold 0 gives every image detections"
    assert detector.detect(images, queries) == first
    again = registry.build("detector", SPECS[family], **ZERO[family])
    assert again.model is not detector.model
    assert again.detect(images, queries) == first


def test_boxes_match_raw_predictions_mapped_by_hand(detector, family, images):
    """Recompute every box from the model's normalised (cx, cy, w, h) output: OWLv2 pads each
    image to a square (bottom/right), so its boxes scale by the longer side; Grounding DINO
    predicts relative to each image's own unpadded extent (one forward per image here: the
    photos differ in size)."""
    captured = []
    handle = detector.model.register_forward_hook(
        lambda m, a, k, out: captured.append((out, k["input_ids"])), with_kwargs=True
    )
    try:
        queries = QUERIES[: len(images)]
        results = detector.detect(images, queries)
    finally:
        handle.remove()
    assert len(captured) == {"owlv2": 1, "grounding_dino": len(images)}[family]
    for n, (image, qs, dets) in enumerate(zip(images, queries, results, strict=True)):
        out, ids = captured[0] if family == "owlv2" else captured[n]
        row = n if family == "owlv2" else 0
        w, h = image.size
        cx, cy, bw, bh = out.pred_boxes[row].float().unbind(-1)
        if family == "owlv2":
            scale = torch.tensor([max(w, h)] * 4)
            probs = out.logits[row, :, : len(qs)].float().sigmoid()  # padding queries excluded
            score, label = probs.max(-1)
        else:
            scale = torch.tensor([w, h, w, h])
            probs = out.logits[row].float().sigmoid()
            score, label = _gdino_phrase_scores(detector, probs, ids[row].tolist(), qs)
        corners = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1) * scale
        corners[:, 0::2] = corners[:, 0::2].clamp(0, w)
        corners[:, 1::2] = corners[:, 1::2].clamp(0, h)
        expected = [
            (qs[int(lab)], float(s), tuple(b.tolist()))
            for s, lab, b in zip(score, label, corners, strict=True)
            if s > 0 and b[2] > b[0] and b[3] > b[1]
        ]
        got = [(d.query, d.score, d.box) for d in dets]
        assert len(got) == len(expected)
        for (gq, gs, gb), (eq, es, eb) in zip(
            got, sorted(expected, key=lambda e: -e[1]), strict=True
        ):
            assert gq == eq
            assert gs == pytest.approx(es, abs=1e-5)
            assert gb == pytest.approx(eb, abs=1e-2)


def _phrase(query: str) -> str:
    return query.replace(".", " ").replace("?", " ").strip().lower()


def _gdino_phrase_scores(detector, probs, ids, queries):
    """Per box: the best token probability of each query, found by locating each query's own
    token ids inside the prompt (independent of the backend's character offsets). A repeated
    query is asked once, and its detections carry its first spelling."""
    tokenizer = detector.processor.tokenizer
    first: dict[str, int] = {}
    columns = []
    for n, q in enumerate(queries):
        sub = tokenizer(_phrase(q), add_special_tokens=False)["input_ids"]
        starts = [i for i in range(len(ids) - len(sub) + 1) if ids[i : i + len(sub)] == sub]
        assert starts, f"{q!r} not in the prompt"
        column = probs[:, starts[0] : starts[0] + len(sub)].amax(-1)
        columns.append(column if first.setdefault(_phrase(q), n) == n else column * 0 - 1)
    return torch.stack(columns, -1).max(-1)


# 48 distinct 6-token phrases (corpus words, so no two share a tokenization): 48 x 7 tokens
# with the "." delimiters, more than one 256-token Grounding DINO prompt but less than two.
LONG_QUERIES = [
    f"a {colour} {thing} next to a window"
    for colour in ("red", "green", "blue", "yellow", "black", "white", "pink", "brown")
    for thing in ("cat", "car", "bus", "horse", "book", "phone")
]


def test_grounding_dino_splits_overlong_prompts_into_rounds(images):
    """Queries that overflow the text encoder are asked in a second forward, none is dropped:
    every image's first chunk goes in one call, the second chunks in the next (one forward
    per round: ``max_padding=1.0`` batches the photos' different sizes together)."""
    det = registry.build(
        "detector", SPECS["grounding_dino"], **ZERO["grounding_dino"], max_padding=1.0
    )
    tokenizer = det.processor.tokenizer
    whole = ". ".join(_phrase(q) for q in LONG_QUERIES) + "."
    assert det.max_text_len < len(tokenizer(whole)["input_ids"]) < 2 * det.max_text_len
    # Two images with the long list (in different orders), any others with one short query.
    queries = [LONG_QUERIES, LONG_QUERIES[::-1]] + [["a cat"]] * (len(images) - 2)
    captured: list[torch.Tensor] = []
    handle = det.model.register_forward_hook(
        lambda m, a, k, out: captured.append(k["input_ids"].clone()), with_kwargs=True
    )
    try:
        results = det.detect(images, queries)
    finally:
        handle.remove()

    assert len(captured) == 2
    assert captured[0].shape[0] == len(images) and captured[1].shape[0] == 2
    assert all(ids.shape[1] <= det.max_text_len for ids in captured)
    chunks: list[list[list[str]]] = [[], []]  # per round, per image in it: queries asked
    for rnd, ids in enumerate(captured):
        for row in ids.tolist():
            real = [t for t in row if t != tokenizer.pad_token_id]
            assert real[-1] == tokenizer.sep_token_id  # whole prompt, nothing truncated
            found = {q: _find(row, tokenizer, q) for q in LONG_QUERIES + ["a cat"]}
            chunks[rnd].append(sorted((q for q in found if found[q] >= 0), key=found.get))
    # Greedy packing: the first prompt is full (the next phrase, 7 tokens, did not fit).
    first = [t for t in captured[0][0].tolist() if t != tokenizer.pad_token_id]
    assert len(first) > det.max_text_len - 7
    # Every query of each long list is asked exactly once, in one of the two rounds.
    for i in (0, 1):
        asked = chunks[0][i] + chunks[1][i]
        assert sorted(asked) == sorted(LONG_QUERIES) and len(set(asked)) == len(asked)
        assert chunks[0][i] and chunks[1][i]

    # The merged answer is exactly each round's own answer, and both rounds contribute.
    round1 = det.detect(images, chunks[0])
    round2 = det.detect(images[:2], chunks[1])
    for i, dets in enumerate(results):
        expected = round1[i] + (round2[i] if i < 2 else [])
        assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
        # Boxes from two rounds can tie on score: compare as multisets.
        assert sorted(map(_key, dets)) == sorted(map(_key, expected))
        assert all(d.query in queries[i] for d in dets)
    for i in (0, 1):
        returned = {d.query for d in results[i]}
        assert returned & set(chunks[0][i]) and returned & set(chunks[1][i])


def _key(d: Detection) -> tuple:
    return (d.query, round(d.score, 6), tuple(round(v, 3) for v in d.box))


def _find(ids: list[int], tokenizer, query: str) -> int:
    """Where the query's tokens start in the prompt ``ids``; -1 if they are not in it."""
    sub = tokenizer(_phrase(query), add_special_tokens=False)["input_ids"]
    starts = [i for i in range(len(ids) - len(sub) + 1) if ids[i : i + len(sub)] == sub]
    return starts[0] if starts else -1


def test_grounding_dino_batches_images_of_one_size_and_pads_no_other(images):
    """Images of different sizes get forwards of their own, so each image's detections are
    those it gets alone; those of one size share a forward (their prompts' padding is masked);
    ``max_padding=1.0`` pads them all into one, which shifts the padded images' detections."""
    det = registry.build("detector", SPECS["grounding_dino"], **ZERO["grounding_dino"])
    batch = [*images, images[0]]  # the first size twice, with prompts of different lengths
    queries = [["a cat", "a dog", "a red car"]] + [["a cat", "a dog"]] * (len(images) - 1)
    queries.append(["a cat"])
    calls, handle = _count_forwards(det.model)
    try:
        grouped = det.detect(batch, queries)
        assert calls[0] == len(images)
        alone = [det.detect([image], [qs])[0] for image, qs in zip(batch, queries, strict=True)]
    finally:
        handle.remove()
    for single, dets in zip(alone, grouped, strict=True):
        assert [d.query for d in single] == [d.query for d in dets]
        for a, b in zip(single, dets, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-4)
            assert a.box == pytest.approx(b.box, abs=1e-2)

    padded = registry.build(
        "detector", SPECS["grounding_dino"], **ZERO["grounding_dino"], max_padding=1.0
    )
    calls, handle = _count_forwards(padded.model)
    try:
        together = padded.detect(batch, queries)
    finally:
        handle.remove()
    assert calls[0] == 1
    assert together != grouped  # the padding shifts the smaller images' features
    with rejected(ValueError, "max_padding"):
        registry.build("detector", SPECS["grounding_dino"], max_padding=-0.5)


def test_owl_batch_equals_one_image_at_a_time(images):
    """OWL sees each image alone, and padded queries are masked: batching changes nothing.
    (Grounding DINO batches only images of one size: the test above.)"""
    det = registry.build("detector", SPECS["owlv2"], **ZERO["owlv2"])
    queries = QUERIES[: len(images)]
    batched = det.detect(images, queries)
    for image, qs, dets in zip(images, queries, batched, strict=True):
        (single,) = det.detect([image], [qs])
        assert [d.query for d in single] == [d.query for d in dets]
        for a, b in zip(single, dets, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-4)
            assert a.box == pytest.approx(b.box, abs=1e-2)


def test_default_thresholds_and_option_checks(detector, family, images):
    det = registry.build("detector", SPECS[family])
    default = {"grounding_dino": 0.3, "owlv2": 0.1}[family]
    assert det.box_threshold == default
    if family == "grounding_dino":
        assert det.text_threshold == 0.25
    queries = QUERIES[: len(images)]
    kept, everything = det.detect(images, queries), detector.detect(images, queries)
    # random weights score boxes on both sides of the default: the threshold has work to do
    assert sum(map(len, kept)) > 0
    assert any(d.score <= default for dets in everything for d in dets)
    for dets, all_dets in zip(kept, everything, strict=True):
        assert all(d.score > default for d in dets)
        # exactly the boxes that score over the default, none lost, none added
        above = {(d.box, d.score) for d in all_dets if d.score > default}
        assert {(d.box, d.score) for d in dets} == above
    strict = registry.build("detector", SPECS[family], box_threshold=1.0)
    assert strict.detect(images, QUERIES[: len(images)]) == [[] for _ in images]
    with rejected(TypeError, "no_such_option"):
        registry.build("detector", SPECS[family], no_such_option=1)
    with rejected(ValueError, "box_threshold"):
        registry.build("detector", SPECS[family], box_threshold=1.5)
    with pytest.raises(ValueError):
        det.detect(images, [["a cat"]])


def test_tiny_builds_are_deterministic_and_small(family, tmp_path):
    from factcap.backends import tiny

    a = tiny.build(family, tmp_path / "a")
    b = tiny.build(family, tmp_path / "b")
    digest = [hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest() for d in (a, b)]
    assert digest[0] == digest[1]
    size = sum(p.stat().st_size for p in a.iterdir())
    assert size < 5 * 2**20
    assert (a / "processor_config.json").exists()
