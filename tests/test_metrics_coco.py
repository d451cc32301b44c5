"""BLEU, ROUGE-L, CIDEr-D and the caption tokenizer, cross-checked against pycocoevalcap.

The cross-checks need ``pycocoevalcap`` (its BLEU, ROUGE-L and CIDEr-D scorers are pure
Python); the one that runs its Java PTBTokenizer also needs ``java`` on the PATH.
"""

from __future__ import annotations

import doctest
import math
import random
import shutil

import pytest

from factcap.errors import ConfigError
from factcap.metrics import Sample, build
from factcap.metrics import coco as coco_module
from factcap.metrics import tokenize as tokenize_module
from factcap.metrics.coco import Bleu, Cider, RougeL, bleu, cider_d, lcs_length, rouge_l
from factcap.metrics.tokenize import PUNCTUATIONS, ptb_tokens, tokenize, tokenize_all

# Pre-tokenised captions with 1-5 references each: partial overlap, an exact match, an
# empty caption, no overlap, a single reference, repeated words, a caption longer than its
# references, references of tied length distance.
CANDIDATES = [
    "a man riding a wave on top of a surfboard",
    "two dogs playing with a frisbee in the park",
    "a cat laying on a bed next to a laptop",
    "",
    "purple elephants juggle quietly",
    "a red bus",
    "the the the the the the the",
    "a kitchen with a stove and a refrigerator and a microwave and a sink and a table",
    "a plate of food with broccoli and rice",
    "a woman holding an umbrella in the rain",
    "a giraffe standing next to a tree",
    "people walking on a busy city street at night",
]
REFERENCES = [
    [
        "a man riding a wave on top of a surfboard",
        "a surfer rides a large wave in the ocean",
        "a person on a surfboard riding a wave",
    ],
    [
        "two dogs play with a frisbee on the grass",
        "a pair of dogs chase a frisbee in a park",
        "dogs playing in the park",
        "two brown dogs running after a flying disc",
    ],
    [
        "a cat is laying on the bed near a laptop computer",
        "a cat sleeping next to an open laptop",
        "a kitten on a bed beside a computer",
        "a gray cat lying on a blanket",
        "a laptop and a cat on a bed",
    ],
    ["a bowl of soup on a table", "soup in a white bowl"],
    ["a man riding a bike down the street"],
    ["a red double decker bus driving down the street", "a bus"],
    ["the cat is on the mat", "there is a cat on the mat"],
    ["a kitchen with a stove and a sink", "a small kitchen with white cabinets"],
    ["a plate of food with broccoli and rice"],
    [
        "a woman with an umbrella walking in the rain",
        "a lady holds an umbrella on a rainy day",
        "a woman holding a black umbrella",
    ],
    ["a giraffe next to a tree", "a tall giraffe stands by a tree in a zoo enclosure"],
    [
        "people walking down a city street at night",
        "a crowded street in the city at night",
        "pedestrians on a busy street",
    ],
]


def _coco_inputs(candidates, references):
    gts = {i: list(refs) for i, refs in enumerate(references)}
    res = {i: [c] for i, c in enumerate(candidates)}
    return gts, res


def _reference_scores(candidates, references, n_bleu=4):
    """pycocoevalcap's values: (bleu corpus, bleu per item, rouge, rouges, cider, ciders)."""
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu as CocoBleu
    from pycocoevalcap.cider.cider import Cider as CocoCider
    from pycocoevalcap.rouge.rouge import Rouge as CocoRouge

    gts, res = _coco_inputs(candidates, references)
    bleu_corpus, bleu_lists = CocoBleu(n_bleu).compute_score(gts, res, verbose=0)
    rouge_mean, rouges = CocoRouge().compute_score(gts, res)
    cider_mean, ciders = CocoCider().compute_score(gts, res)
    bleu_items = [list(values) for values in zip(*bleu_lists, strict=True)]
    return (
        list(bleu_corpus),
        bleu_items,
        float(rouge_mean),
        [float(v) for v in rouges],
        float(cider_mean),
        [float(v) for v in ciders],
    )


def _random_set(seed: int, size: int) -> tuple[list[str], list[list[str]]]:
    rng = random.Random(seed)
    vocab = "a the man woman dog cat red blue on in with of and is sitting table street".split()

    def sentence(low: int) -> str:
        return " ".join(rng.choices(vocab, k=rng.randint(low, 12)))

    candidates = [sentence(0) for _ in range(size)]
    references = [[sentence(1) for _ in range(rng.randint(1, 5))] for _ in range(size)]
    return candidates, references


# --- cross-checks against pycocoevalcap -------------------------------------------------


def test_bleu_rouge_cider_equal_pycocoevalcap_on_the_fixed_set():
    expected = _reference_scores(CANDIDATES, REFERENCES)
    bleu_corpus, bleu_items = bleu(CANDIDATES, REFERENCES)
    rouge_mean, rouges = rouge_l(CANDIDATES, REFERENCES)
    cider_mean, ciders = cider_d(CANDIDATES, REFERENCES)
    assert len(bleu_items) == len(rouges) == len(ciders) == len(CANDIDATES) >= 10
    # the same operations in the same order: equal to the last bit
    assert bleu_corpus == expected[0]
    assert bleu_items == expected[1]
    assert rouge_mean == expected[2]
    assert rouges == expected[3]
    assert cider_mean == expected[4]
    assert ciders == expected[5]
    # and the values are not degenerate: the set spans a real range
    assert max(ciders) > 3 and min(ciders) == 0.0
    assert 0 < bleu_corpus[3] < bleu_corpus[0] < 1


def test_bleu_with_two_grams_equals_pycocoevalcap():
    expected = _reference_scores(CANDIDATES, REFERENCES, n_bleu=2)
    corpus, items = bleu(CANDIDATES, REFERENCES, n=2)
    assert corpus == expected[0]
    assert items == expected[1]
    assert all(len(values) == 2 for values in items)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_sets_equal_pycocoevalcap(seed):
    candidates, references = _random_set(seed, 150)
    expected = _reference_scores(candidates, references)
    got = (*bleu(candidates, references), *rouge_l(candidates, references))
    got += cider_d(candidates, references)
    for mine, theirs in zip(got, expected, strict=True):
        assert mine == theirs


def test_metric_classes_equal_pycocoevalcap_on_raw_captions():
    raw_candidates = ["A man riding a wave on top of a surfboard.", "Two dogs, playing!", ""]
    raw_references = [
        ["A man rides a wave on his surfboard.", "A surfer in the ocean."],
        ["Two dogs play with a frisbee.", "Dogs playing in the park!", "Two brown dogs."],
        ["A bowl of soup."],
    ]
    samples = [
        Sample(str(i), f"{i}.jpg", "final:short", c, refs)
        for i, (c, refs) in enumerate(zip(raw_candidates, raw_references, strict=True))
    ]
    candidates = tokenize_all(raw_candidates)
    references = [tokenize_all(refs) for refs in raw_references]
    assert candidates[1] == "two dogs playing"
    expected = _reference_scores(candidates, references)

    bleu_metric, rouge_metric, cider_metric = Bleu(), RougeL(), Cider()
    bleu_scores = bleu_metric.score(samples, None)
    assert [[s.values[f"bleu_{k}"] for k in range(1, 5)] for s in bleu_scores] == expected[1]
    assert list(bleu_metric.corpus(samples, bleu_scores).values()) == expected[0]
    assert [s.values["rouge_l"] for s in rouge_metric.score(samples, None)] == expected[3]
    cider_scores = cider_metric.score(samples, None)
    assert [s.values["cider"] for s in cider_scores] == expected[5]
    assert cider_metric.corpus(samples, cider_scores) == {"cider": expected[4]}


@pytest.mark.skipif(
    shutil.which("java") is None,
    reason="the reference tokenizer needs java: apt-get install default-jre-headless"
    " (scripts/setup.sh does, as root or with passwordless sudo)",
)
def test_tokenizer_equals_pycocoevalcap_ptbtokenizer():
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = [raw for raw, _ in TOKENIZED] + [
        "A close-up of a hot dog with mustard & ketchup.",
        "A 3D rendering of a coffee cup on a saucer, with latte art.",
        'The text on the sign reads: "Welcome to New York City".',
        'A street sign for "Main St." and "5th Ave."',
        "The clock shows 3:45 PM; it's approx. 10 m long.",
        "Her name is Ms. O'Neil, and she's a doctor.",
        "There are around 20-25 people in the crowd, most wearing masks.",
        "The cat's eyes are green & its fur is grey-white.",
        "A bowl of ramen (ラーメン) with chopsticks, naïve café art.",
        "The temperature reads 72°F on the thermostat → 3 ½ cups.",
    ]
    java = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    assert [tokenize(c) for c in captions] == [java[i][0] for i in range(len(captions))]


# --- the pure functions on their own ----------------------------------------------------


def test_bleu_by_hand():
    # identical: 1 up to the smoothing constants
    _, [exact] = bleu(["a cat on the mat"], [["a cat on the mat"]])
    assert exact == pytest.approx([1.0] * 4, abs=1e-8)
    # repeated words are clipped by the reference count: 2 "the" of 7 words
    _, [repeated] = bleu(["the the the the the the the"], [["the cat is on the mat"]])
    assert repeated[0] == pytest.approx(2 / 7, abs=1e-9)
    # brevity penalty exp(1 - r/c) with r = 6, c = 2
    _, [short] = bleu(["the cat"], [["the cat is on the mat"]])
    assert short[0] == pytest.approx(math.exp(1 - 6 / 2), rel=1e-8)
    # closest reference length on a tie (3 and 5 for a 4-word caption) is the shorter: no
    # penalty; the longer one alone would give exp(1 - 5/4)
    _, [tie] = bleu(["a b c d"], [["a b c", "a b c d e"]])
    assert tie[0] == pytest.approx(1.0, abs=1e-8)
    _, [longer] = bleu(["a b c d"], [["a b c d e"]])
    assert longer[0] == pytest.approx(math.exp(1 - 5 / 4), rel=1e-8)


def test_bleu_corpus_is_not_the_mean_of_items():
    corpus, items = bleu(["a cat", "the dog is on the red mat"], [["a cat"], ["the dog is here"]])
    assert [values[0] for values in items] == pytest.approx([1.0, 3 / 7], abs=1e-8)
    assert corpus[0] == pytest.approx((2 + 3) / (2 + 7), abs=1e-8)  # not (1 + 3/7) / 2


def test_edge_cases_empty_and_no_overlap_score_zero():
    candidates = ["", "purple elephants juggle", "a dog"]
    references = [["a dog runs"], ["a dog runs"], ["a dog runs"]]
    _, bleus = bleu(candidates, references)
    assert all(b < 1e-9 for b in bleus[0] + bleus[1])
    assert bleus[2][0] > 0.4
    _, rouges = rouge_l(candidates, references)
    assert rouges[:2] == [0.0, 0.0] and rouges[2] > 0.5
    _, ciders = cider_d(candidates, references)
    assert ciders[0] == ciders[1] == 0.0


def test_rouge_l_by_hand():
    # LCS("a cat on a mat", "the cat sat") = 1: P = 1/5, R = 1/3, beta = 1.2
    _, [value] = rouge_l(["a cat on a mat"], [["the cat sat"]])
    p, r, b2 = 1 / 5, 1 / 3, 1.2**2
    assert value == pytest.approx((1 + b2) * p * r / (r + b2 * p), rel=1e-12)
    # the maxima over references are taken separately (best P from one, best R from another)
    _, [best] = rouge_l(["a b c d"], [["a b c d x x x x", "a"]])
    assert best == pytest.approx(1.0)  # P = 1 from the first, R = 1 from the second
    _, [same] = rouge_l(["a cat"], [["a cat"]])
    assert same == pytest.approx(1.0)


def test_lcs_length():
    assert lcs_length("a b c d".split(), "b d".split()) == 2
    assert lcs_length("b d".split(), "a b c d".split()) == 2
    assert lcs_length([], "a b".split()) == 0
    assert lcs_length("x y".split(), "a b".split()) == 0
    assert lcs_length("a b a b a".split(), "b a b".split()) == 3


def test_cider_depends_on_the_evaluated_set():
    candidates = ["a cat on a mat", "a dog"]
    references = [["a cat on the mat"], ["a big dog"]]
    # one item: every n-gram occurs in all (one) documents, IDF 0, CIDEr 0
    assert cider_d(candidates[:1], references[:1]) == (0.0, [0.0])
    mean, items = cider_d(candidates, references)
    assert items[0] > 4 and items[1] > 1
    assert mean == pytest.approx(sum(items) / 2)
    # adding an item that shares n-grams with the first one lowers their IDF
    _, more = cider_d([*candidates, "a cat"], [*references, ["a cat on a bed"]])
    assert more[0] < items[0]


def test_cider_identical_caption_with_distinct_references_is_ten():
    _, items = cider_d(["a b c d e", "v w x y z"], [["a b c d e"], ["q r s t u"]])
    assert items[0] == pytest.approx(10.0, abs=1e-9)
    assert items[1] == 0.0


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="2 candidates but 1"):
        bleu(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="non-empty"):
        rouge_l(["a"], [[]])
    with pytest.raises(TypeError, match="not one string"):
        cider_d("a cat", [["a cat"]])
    with pytest.raises(ValueError, match="at least 1"):
        bleu(["a"], [["a"]], n=0)
    # nothing to score: NaN, not 0
    assert math.isnan(rouge_l([], [])[0]) and math.isnan(cider_d([], [])[0])
    corpus, items = bleu([], [])
    assert len(corpus) == 4 and all(math.isnan(v) for v in corpus) and items == []


# --- the tokenizer ----------------------------------------------------------------------

# Typical captions and what pycocoevalcap's Java PTBTokenizer returns for them.
TOKENIZED = [
    ("A man riding a wave on top of a surfboard.", "a man riding a wave on top of a surfboard"),
    (
        "The kitchen has a stove, a refrigerator, and a microwave.",
        "the kitchen has a stove a refrigerator and a microwave",
    ),
    (
        "A red double-decker bus drives down the street.",
        "a red double-decker bus drives down the street",
    ),
    (
        'There is a sign that says "STOP" on the corner.',
        "there is a sign that says stop on the corner",
    ),
    ("Someone's hand holding a slice of pizza.", "someone 's hand holding a slice of pizza"),
    (
        "The man is wearing a baseball cap (backwards) while he swings the bat.",
        "the man is wearing a baseball cap -lrb- backwards -rrb- while he swings the bat",
    ),
    (
        "In the background, there's a wooden fence and several trees; the sky is overcast.",
        "in the background there 's a wooden fence and several trees the sky is overcast",
    ),
    (
        "The dogs' leashes are tangled around the pole.",
        "the dogs leashes are tangled around the pole",
    ),
    (
        "This is a close-up shot of a cup of coffee... the foam is creamy.",
        "this is a close-up shot of a cup of coffee the foam is creamy",
    ),
    (
        "The price tag says $19.99 and the discount is 20%.",
        "the price tag says $ 19.99 and the discount is 20 %",
    ),
    (
        "The boy isn't wearing shoes; he's running barefoot.",
        "the boy is n't wearing shoes he 's running barefoot",
    ),
    ("A woman wearing a 'Save the Planet' t-shirt.", "a woman wearing a save the planet t-shirt"),
    (
        "Dr. Smith is giving a lecture to students at 5 p.m. in the U.S.",
        "dr. smith is giving a lecture to students at 5 p.m. in the u.s.",
    ),
    ("What is this? A cat!", "what is this a cat"),
    ("A cat?! No, a dog.", "a cat ?! no a dog"),
    (
        "The woman—who is wearing sunglasses—looks at the camera.",
        "the woman who is wearing sunglasses looks at the camera",
    ),
    ("“Smart quotes” and ‘single’ ones … here", "smart quotes and single ones here"),
    (
        "He is 6'2\" tall and can't swim; I'm sure they're right.",
        "he is 6 2 tall and ca n't swim i 'm sure they 're right",
    ),
    (
        "**Main subject:** a 50-year-old man's face, smiling.",
        "** main subject ** a 50-year-old man 's face smiling",
    ),
    (
        "Ingredients: flour, sugar, eggs (2), and milk (1/2 cup).",
        "ingredients flour sugar eggs -lrb- 2 -rrb- and milk -lrb- 1/2 cup -rrb-",
    ),
    (
        "Colors: red/orange/yellow & a [bracketed] {braced} word.",
        "colors red/orange/yellow & a -lsb- bracketed -rsb- -lcb- braced -rcb- word",
    ),
    ("I cannot believe it, gonna be fun.", "i can not believe it gon na be fun"),
    ("  A  man   with   extra   spaces  .  ", "a man with extra spaces"),
    ("...", ""),
    ("", ""),
]


@pytest.mark.parametrize(("raw", "expected"), TOKENIZED)
def test_tokenize_matches_the_java_tokenizer_on_typical_captions(raw, expected):
    assert tokenize(raw) == expected


def test_ptb_tokens_keep_punctuation_and_tokenize_drops_it():
    tokens = ptb_tokens('He said "hello." Then (quietly) left -- fast...')
    assert tokens == [
        "he", "said", "``", "hello", ".", "''", "then", "-lrb-", "quietly", "-rrb-", "left",
        "--", "fast", "...",
    ]  # fmt: skip
    assert tokenize('He said "hello." Then (quietly) left -- fast...') == (
        "he said hello then -lrb- quietly -rrb- left fast"
    )
    assert {"''", "``", ".", "?", "!", ",", ":", ";", "-", "--", "..."} <= PUNCTUATIONS
    # newlines inside a caption are spaces, as pycocoevalcap makes them
    assert tokenize("A cat\non a mat.") == "a cat on a mat"
    assert tokenize_all(["A.", "B!"]) == ["a.", "b"]  # "A." is an initial, like Java's


# --- the Metric classes -----------------------------------------------------------------


def _samples() -> list[Sample]:
    return [
        Sample("1", "1.jpg", "final:short", "A man riding a wave on a surfboard.", REFS[0]),
        Sample("2", "2.jpg", "final:short", "Two dogs play.", []),
        Sample("3", "3.jpg", "final:short", "A cat laying on a bed.", REFS[1]),
        Sample("4", "4.jpg", "final:short", "A bowl of soup.", ["  ", ""]),
        Sample("5", "5.jpg", "final:short", "", ["A plate of food."]),
    ]


REFS = [
    ["A man riding a wave on top of a surfboard.", "A surfer rides a large wave."],
    ["A cat is laying on the bed.", "A cat sleeping next to an open laptop."],
]


@pytest.mark.parametrize(
    ("cls", "names"),
    [(Bleu, ("bleu_1", "bleu_2", "bleu_3", "bleu_4")), (RougeL, ("rouge_l",)), (Cider, ("cider",))],
)
def test_metric_classes_fail_samples_without_references(cls, names):
    metric = cls()
    assert metric.value_names == names and metric.needs == frozenset({"references"})
    scores = metric.score(_samples(), None)
    assert len(scores) == 5
    for i in (1, 3):  # no references, or only blank ones
        assert scores[i].failure == "no references"
        assert set(scores[i].values) == set(names)
        assert all(math.isnan(v) for v in scores[i].values.values())
    for i in (0, 2, 4):
        assert scores[i].failure is None
        assert all(math.isfinite(v) and v >= 0 for v in scores[i].values.values())
    assert all(v == 0 for v in scores[4].values.values())  # an empty caption scores 0
    assert scores[0].values[names[0]] > 0.5


def test_metric_classes_equal_the_pure_functions_on_the_scored_samples():
    samples = _samples()
    candidates = [tokenize(samples[i].caption) for i in (0, 2, 4)]
    references = [tokenize_all(samples[i].references) for i in (0, 2, 4)]
    bleu_corpus, bleu_items = bleu(candidates, references)
    cider_mean, ciders = cider_d(candidates, references)
    bleu_metric, cider_metric = Bleu(), Cider()
    bleu_scores = bleu_metric.score(samples, None)
    cider_scores = cider_metric.score(samples, None)
    assert [list(bleu_scores[i].values.values()) for i in (0, 2, 4)] == bleu_items
    assert list(bleu_metric.corpus(samples, bleu_scores).values()) == bleu_corpus
    # the failed samples take no part in CIDEr's document frequencies
    assert [cider_scores[i].values["cider"] for i in (0, 2, 4)] == ciders
    assert cider_metric.corpus(samples, cider_scores) == {"cider": cider_mean}
    assert [s.values["rouge_l"] for s in RougeL().score(samples, None)][0] == (
        rouge_l(candidates, references)[1][0]
    )


def test_tokenize_option_and_registry():
    metric = build("bleu")
    assert isinstance(metric, Bleu) and metric.tokenize
    assert isinstance(build("rouge_l"), RougeL) and isinstance(build("cider"), Cider)
    with pytest.raises(ConfigError, match="unexpected keyword"):
        build("cider", sigma=3)
    # already tokenised text: punctuation stays a token when tokenize=False
    sample = Sample("1", "1.jpg", "final:short", "a cat .", ["a cat"])
    assert RougeL().score([sample], None)[0].values["rouge_l"] == pytest.approx(1.0)
    assert RougeL(tokenize=False).score([sample], None)[0].values["rouge_l"] < 1.0


def test_corpus_values_when_nothing_could_be_scored():
    samples = [Sample("1", "1.jpg", "final:short", "a cat", [])]
    assert all(math.isnan(v) for v in Bleu().corpus(samples, Bleu().score(samples, None)).values())
    assert math.isnan(Cider().corpus(samples, Cider().score(samples, None))["cider"])


def test_doctests():
    assert doctest.testmod(coco_module).failed == 0
    assert doctest.testmod(tokenize_module).failed == 0
