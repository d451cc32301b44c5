"""Train the shapes world's LLM: a small causal LM that does the pipeline's two text tasks.

The pipeline asks its LLM two things, each as one user message through the chat template:
**claims** (the claims prompt around the captioners' proposals → the JSON array of
:func:`~factcap.bench.shapes.language.claims_answer`) and **compose** (the compose prompt
around the proposals, the checked claims and the ``detailed`` style → the caption of
:func:`~factcap.bench.shapes.language.compose_answer`). Training prompts are rendered with
the pipeline's own functions (:func:`~factcap.prompts.quote_data`,
:func:`~factcap.pipeline.compose.verdicts_block`, ...), so the model sees exactly what the
pipeline sends; the proposals are labelled ``hf:<some directory>/captioner_<noise>`` with a
random directory, which the model learns to ignore.

Tokenizer: the fixed instruction text of the two prompts and every object phrase of the
world (``a small red circle``, ``two large blue squares``, ``red circle``, ...) are added
tokens, one id each; the rest is a byte-level BPE learnt on the task texts, whose merges may
span spaces (JSON keys and sentence frames become single tokens). A claims answer is then at
most ~90 tokens, a caption ~16.

Model: an ``Lfm2ForCausalLM`` (transformers' LFM2) whose layers alternate short causal
convolutions and attention: the convolution hands every token its two predecessors, so one
attention layer can find "the phrase after the one just copied". Phrase embeddings start as
sums of random feature vectors (count, size, colour, shape). The loss is the answer tokens'
plus that of prompt phrases repeating an earlier subject (copying practice). It is saved with
a ``PreTrainedTokenizerFast`` carrying a small chat template, so factcap loads it with
``registry.build("llm", "hf:<dir>")`` as :class:`factcap.backends.hf_llm.CausalLM`.

>>> import random
>>> from factcap.bench.shapes.world import make_scene
>>> sample = make_sample("claims", make_scene(0, split="train"), random.Random(0))
>>> sample.task, sample.answer.startswith("[{")
('claims', True)
"""

from __future__ import annotations

import random
import re
import string
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from factcap.bench.shapes import world
from factcap.bench.shapes.language import (
    CAPTIONERS,
    NUMBERS,
    Noise,
    claims_answer,
    compose_answer,
    mentions,
    noisy_caption,
    phrase,
)
from factcap.bench.shapes.training import Phase, TrainingRun
from factcap.bench.shapes.world import Scene
from factcap.pipeline.compose import style_text, verdicts_block
from factcap.pipeline.expert import expert_claims
from factcap.pipeline.parsing import parse_claims
from factcap.prompts import load_prompt, quote_data, render
from factcap.prompts.style import shipped_styles
from factcap.schema import Claim
from factcap.text.jsonrepair import ParseError

TASKS = ("claims", "compose")
STYLE = "detailed"
MAX_CLAIMS = 32  # the pipeline's default ``verify.max_claims``
SINGLE_P = 0.05  # a single proposal (the other captioner failed)
CLEAN_P = 0.1  # a proposal that is the true caption
LOWER_P = 0.6  # a lowercase proposal (the world's captioners write lowercase, like BLIP)
UNCERTAIN_P = 0.3  # compose samples whose verdicts are all "uncertain" (verification off)
FLIP_UNCERTAIN_P = 0.15  # a checked claim left uncertain
FLIP_WRONG_P = 0.05  # a checked claim judged wrongly (the checkers make mistakes)
EXPERT_P = 0.8  # an object no draft names that the detection expert adds (checked samples)
CORRECT_P = 0.8  # a refuted size of an object that holds, corrected to the true size

USER, ASSISTANT, SYSTEM = "<|user|>", "<|assistant|>", "<|system|>"
EOS, PAD = "<|end|>", "<|pad|>"
SPECIALS = [PAD, EOS, USER, ASSISTANT, SYSTEM]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

# ``layers`` spells the layer types (:func:`build_model`); ``vocab`` is the BPE's size before
# the added tokens; ``corpus`` how many samples the BPE is learnt on; ``claims_share`` claims
# samples per compose sample; ``compose_weight`` / ``echo_weight``: see :class:`Weights`.
PLANS: dict[str, dict[str, Any]] = {
    "full": {
        "hidden": 128,
        "layers": "caca",
        "heads": 4,
        "vocab": 768,
        "corpus": 3000,
        "steps": 4800,
        "batch": 16,
        "lr": 8e-3,
        "claims_share": 2,
        "compose_weight": 3.0,
        "echo_weight": 1.0,
    },
    "smoke": {
        "hidden": 32,
        "layers": "ca",
        "heads": 2,
        "vocab": 300,
        "corpus": 60,
        "steps": 4,
        "batch": 4,
        "lr": 1e-3,
        "claims_share": 2,
        "compose_weight": 3.0,
        "echo_weight": 1.0,
    },
}


# --- the tasks, rendered as the pipeline renders them ---------------------------------------


_PATH_WORDS = (
    "home tmp models shapes world bench runs out data work cache factcap experiments "
    "checkpoints users alice bob ci build artifacts results scratch mnt nfs v1 v2 final"
).split()


def _path_part(rng: random.Random) -> str:
    style = rng.random()
    if style < 0.5:
        return rng.choice(_PATH_WORDS)
    alphabet = string.ascii_lowercase + string.digits + ("_-." if style < 0.8 else "")
    word = "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 12)))
    return word.strip(".") or "x"


def random_root(rng: random.Random) -> str:
    """A directory the user might have trained the world's models into (absolute, resolved)."""
    parts = [_path_part(rng) for _ in range(rng.randint(0, 8 if rng.random() < 0.1 else 4))]
    if rng.random() < 0.2:
        parts[0:0] = ["tmp", f"pytest-of-{_path_part(rng)}", f"pytest-{rng.randint(0, 99)}"]
    return "/" + "/".join(parts) if parts else ""


def captioner_label(root: str, name: str) -> str:
    """The model spec a captioner's proposal is labelled with: ``hf:<root>/<name>``."""
    return f"hf:{root}/{name}"


def proposals(scene: Scene, rng: random.Random) -> tuple[list[str], list[str]]:
    """Texts and labels of the captioners' proposals for ``scene``: usually both captioners
    with their noise, sometimes clean captions, sometimes a single proposal."""
    root = random_root(rng)
    names = list(CAPTIONERS)
    if rng.random() < SINGLE_P:
        names = [rng.choice(names)]
    clean = CLEAN_P
    texts = [
        noisy_caption(scene, Noise() if rng.random() < clean else CAPTIONERS[name], rng)
        for name in names
    ]
    texts = [text.lower() if rng.random() < LOWER_P else text for text in texts]
    return texts, [captioner_label(root, name) for name in names]


def claims_prompt(texts: Sequence[str], labels: Sequence[str]) -> str:
    """The user message of claim extraction (as :func:`~factcap.pipeline.verify.extract_claims`
    sends it for these proposals)."""
    return render(load_prompt("claims"), proposals=quote_data(texts, labels))


def compose_prompt(texts: Sequence[str], labels: Sequence[str], claims: Sequence[Claim]) -> str:
    """The user message of composing (as :func:`~factcap.pipeline.compose.compose` sends it in
    the ``detailed`` style)."""
    return render(
        load_prompt("compose"),
        proposals=quote_data(texts, labels),
        verdicts=verdicts_block(claims),
        style=style_text(shipped_styles()[STYLE], None),
    )


def is_true(claim: Claim, scene: Scene) -> bool:
    """Whether ``claim`` (as :func:`~factcap.bench.shapes.language.claims_for` writes them)
    holds in ``scene``."""
    colour, _, shape = claim.subject.rpartition(" ")
    colour = colour or None
    if claim.kind == "object":
        return scene.count(shape, colour) > 0
    if claim.kind == "attribute":
        size = claim.text.rstrip(".").rsplit(" ", 1)[-1]
        return scene.count(shape, colour, size) > 0
    if claim.kind == "count":
        return scene.count(shape, colour) == claim.count
    return False


def judge(claims: Sequence[Claim], scene: Scene, rng: random.Random, checked: bool) -> None:
    """Set the verdicts: all ``uncertain`` when not ``checked``; else from the truth, a few
    left uncertain or judged wrongly, with attributes and counts of refuted objects refuted
    (as the pipeline's verification does)."""
    for claim in claims:
        claim.verdict = "uncertain"
        if not checked:
            continue
        truth = is_true(claim, scene)
        roll = rng.random()
        if roll < FLIP_WRONG_P:
            truth = not truth
        if roll < FLIP_WRONG_P or roll >= FLIP_WRONG_P + FLIP_UNCERTAIN_P:
            claim.verdict = "supported" if truth else "refuted"
    refuted = {c.subject for c in claims if c.kind == "object" and c.verdict == "refuted"}
    for claim in claims:
        if claim.kind != "object" and claim.subject in refuted:
            claim.verdict = "refuted"


def expert_facts(scene: Scene, texts: Sequence[str], rng: random.Random) -> list[Claim]:
    """What the detection expert adds (:mod:`factcap.pipeline.expert`), as the pipeline
    passes it to compose: for objects of ``scene`` that no draft names, an object claim and a
    size claim, both supported, ``origin: expert``."""
    named = {(m.colour, m.shape) for text in texts for m in mentions(text)}
    facts: list[Claim] = []
    for obj in scene.objects:
        name = f"{obj.colour} {obj.shape}"
        if (obj.colour, obj.shape) in named or any(c.subject == name for c in facts):
            continue
        if rng.random() >= EXPERT_P:
            continue
        facts += expert_claims(name, 1.0, {"size": (obj.size,)})  # its size, as chosen
    for fact in facts:
        fact.verdict = "supported"
    return facts


def correct(claims: Sequence[Claim], scene: Scene, rng: random.Random) -> None:
    """Turn refuted size claims of objects that hold into corrections to the true size, as the
    pipeline's alternatives do (:func:`factcap.pipeline.check._correct`)."""
    held = {c.subject for c in claims if c.kind == "object" and c.verdict == "supported"}
    for claim in claims:
        if claim.kind != "attribute" or claim.verdict != "refuted" or claim.subject not in held:
            continue
        colour, _, shape = claim.subject.rpartition(" ")
        stated = claim.text.rstrip(".").rsplit(" ", 1)[-1]
        true = [s for s in world.SIZES if s != stated and scene.count(shape, colour, s)]
        if not true or rng.random() >= CORRECT_P:
            continue
        claim.evidence["corrected"] = {"from": stated, "to": true[0], "text": claim.text}
        claim.text = claim.text.replace(stated, true[0])
        claim.verdict = "corrected"


@dataclass
class Sample:
    """One training or evaluation example: the proposals (and, for compose, the checked
    claims) it was made from, the user message and the answer to learn."""

    task: str
    texts: list[str]
    labels: list[str]
    prompt: str
    answer: str
    claims: list[Claim] = field(default_factory=list)
    regime: str = ""  # compose: "checked" or "uncertain"


def make_sample(task: str, scene: Scene, rng: random.Random, checked: bool | None = None) -> Sample:
    """A ``task`` example for ``scene``; ``checked`` picks the compose regime (random if None)."""
    texts, labels = proposals(scene, rng)
    answer = claims_answer(texts)
    if task == "claims":
        return Sample(task, texts, labels, claims_prompt(texts, labels), answer)
    if task != "compose":
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    claims = parse_claims(answer, MAX_CLAIMS)
    if checked is None:
        checked = rng.random() >= UNCERTAIN_P
    judge(claims, scene, rng, checked)
    if checked:
        correct(claims, scene, rng)
        claims += expert_facts(scene, texts, rng)
    final = compose_answer(
        [{"kind": c.kind, "subject": c.subject, "text": c.text, "count": c.count} for c in claims],
        ["supported" if c.verdict == "corrected" else c.verdict for c in claims],
        texts,
    )
    regime = "checked" if checked else "uncertain"
    prompt = compose_prompt(texts, labels, claims)
    return Sample(task, texts, labels, prompt, final, claims, regime)


def samples(
    n: int, seed: int, split: str, start: int = 0, tasks: Sequence[str] = TASKS
) -> list[Sample]:
    """``n`` examples cycling through ``tasks``, on scenes ``start ..`` of ``split``."""
    rng = random.Random(f"llm/{split}/{seed}/{start}")
    return [
        make_sample(tasks[i % len(tasks)], world.make_scene(start + i, seed, split), rng)
        for i in range(n)
    ]


# --- tokenizer -------------------------------------------------------------------------------


def fixed_pieces() -> list[str]:
    """The constant text of the two rendered prompts (between their variable parts)."""
    marker = "\x00"
    claims = render(load_prompt("claims"), proposals=marker)
    compose = render(
        load_prompt("compose"),
        proposals=marker,
        verdicts=marker,
        style=style_text(shipped_styles()[STYLE], None),
    )
    return [p for p in claims.split(marker) + compose.split(marker) if p]


def phrases() -> list[str]:
    """Every object phrase of the world's captions and claims: ``a small red circle``, ``two
    large blue squares``, ``an orange cross``, ``three green triangles``, ``red circle``."""
    found = []
    for colour in world.COLOURS:
        for shape in world.SHAPES:
            found.append(f"{colour} {shape}")
            for count in NUMBERS:
                found.append(phrase(("", colour, shape), count))
                found += [phrase((size, colour, shape), count) for size in world.SIZES]
    return found


_PHRASE = re.compile("|".join(re.escape(p) for p in sorted(phrases(), key=len, reverse=True)))


def variable_parts(sample: Sample) -> list[str]:
    """The text of a sample that is not an added token (:func:`fixed_pieces`,
    :func:`phrases`): the rest of its data blocks and its answer."""
    parts = [sample.prompt, sample.answer]
    for piece in fixed_pieces():
        parts = [bit for part in parts for bit in part.split(piece)]
    return [bit for part in parts for bit in _PHRASE.split(part) if bit]


def build_tokenizer(corpus: Sequence[Sample], vocab_size: int) -> Any:
    """The LLM's tokenizer: the prompts' fixed text and the world's object phrases are added
    tokens (one id each); the rest is a byte-level BPE learnt on ``corpus`` whose merges may
    span spaces (digits stay alone); with the chat markers and template."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex("[0-9]"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((p for s in corpus for p in variable_parts(s)), trainer=trainer)
    added = [*fixed_pieces(), *phrases()]
    tok.add_tokens([AddedToken(p, normalized=False) for p in added])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=None,
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
        padding_side="left",
    )


# --- model and training ----------------------------------------------------------------------


def build_model(tokenizer: Any, plan: dict[str, Any]) -> Any:
    """A randomly initialised causal LM sized by ``plan``, stopping at :data:`EOS`. Its
    ``layers`` spell the layer types: ``a`` attention, ``c`` a short causal convolution (each
    token sees the two before it: an ``Lfm2ForCausalLM``); only ``a`` gives a
    ``LlamaForCausalLM``."""
    from transformers import GenerationConfig

    layers = plan["layers"]
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=plan["hidden"],
        intermediate_size=2 * plan["hidden"],
        num_hidden_layers=len(layers),
        num_attention_heads=plan["heads"],
        num_key_value_heads=plan["heads"],
        max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    if "c" in layers:
        from transformers import Lfm2Config, Lfm2ForCausalLM

        types = ["conv" if kind == "c" else "full_attention" for kind in layers]
        config = Lfm2Config(**common, layer_types=types, block_auto_adjust_ff_dim=False)
        model = Lfm2ForCausalLM(config)
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        model = LlamaForCausalLM(LlamaConfig(**common))
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    return model


def phrase_features(tokenizer: Any) -> dict[int, list[str]]:
    """The world features each token stands for: the count, size, colour and shape of an
    object phrase (``count:subject`` for a bare subject), a size inside a sentence frame, a
    digit's count."""
    features: dict[int, list[str]] = {}
    for text in phrases():
        (m,) = mentions(text)
        count = "subject" if m.count is None else str(m.count)
        names = [f"count:{count}", f"colour:{m.colour}", f"shape:{m.shape}"]
        features[tokenizer.convert_tokens_to_ids(text)] = names + [f"size:{m.size}"] * bool(m.size)
    added = set(features)
    for token, index in tokenizer.get_vocab().items():
        if index in added:
            continue
        text = tokenizer.convert_tokens_to_string([token])
        names = [f"size:{size}" for size in world.SIZES if size in text]
        names += [f"count:{text}"] * (text in ("2", "3", "4"))
        if names:
            features[index] = names
    return features


def init_embeddings(model: Any, tokenizer: Any, seed: int) -> None:
    """Start each object phrase as the sum of one random vector per feature of
    :func:`phrase_features`, so ``two large red circles`` begins close to ``red circle`` and
    to ``a large red square`` (the model starts from the world's structure instead of
    learning it); other tokens with features get them added to their own random start."""
    table = model.get_input_embeddings().weight
    generator = torch.Generator().manual_seed(seed)
    scale = model.config.initializer_range
    vectors: dict[str, torch.Tensor] = {}
    own = set(tokenizer.convert_tokens_to_ids(phrases()))
    with torch.no_grad():
        for index, names in phrase_features(tokenizer).items():
            for name in names:
                if name not in vectors:
                    vectors[name] = torch.randn(table.shape[1], generator=generator) * scale
            parts = [vectors[name] for name in names] + [table[index]] * (index not in own)
            table[index] = sum(parts) / len(parts) ** 0.5


def encode(tokenizer: Any, sample: Sample) -> tuple[list[int], int]:
    """Token ids of the templated prompt (ending in the assistant marker), the answer and
    :data:`EOS`; and the prompt's length."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": sample.prompt}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    answer = tokenizer(sample.answer, add_special_tokens=False)["input_ids"]
    return [*prompt, *answer, tokenizer.eos_token_id], len(prompt)


@dataclass(frozen=True)
class Weights:
    """How much each kind of token counts in the loss: the answer tokens of each task, and
    the prompt's object phrases that repeat an earlier subject (the captions repeat each
    other, the verdicts repeat the captions: predicting them is practice in copying)."""

    claims: float = 1.0
    compose: float = 1.0
    echo: float = 1.0

    def of(
        self, sample: Sample, ids: Sequence[int], prompt_len: int, subjects: dict[int, str]
    ) -> list[float]:
        """Per-token loss weights of an encoded ``sample`` (``subjects``: phrase → subject)."""
        weights = [0.0] * prompt_len + [getattr(self, sample.task)] * (len(ids) - prompt_len)
        seen: set[str] = set()
        for pos, token in enumerate(ids[:prompt_len]):
            if token in subjects:
                weights[pos] = self.echo if subjects[token] in seen else 0.0
                seen.add(subjects[token])
        return weights


def collate(
    rows: Sequence[tuple[list[int], int, list[float]]], pad_id: int
) -> dict[str, torch.Tensor]:
    """A right-padded batch of ``(ids, prompt length, loss weights)``."""
    width = max(len(ids) for ids, _, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    answer = torch.zeros((len(rows), width), dtype=torch.bool)
    weights = torch.zeros((len(rows), width))
    for row, (ids, prompt_len, row_weights) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        answer[row, prompt_len : len(ids)] = True
        weights[row, : len(ids)] = torch.tensor(row_weights)
    return {"input_ids": input_ids, "attention_mask": mask, "answer": answer, "weights": weights}


def loss_on(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of each token predicted, times its weight, per answer token; logits are
    computed only where the weight is not zero."""
    hidden = model.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state[:, :-1]
    targets, weights = batch["input_ids"][:, 1:], batch["weights"][:, 1:]
    keep = weights > 0
    logits = model.lm_head(hidden[keep]).float()
    losses = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="none")
    return (losses * weights[keep]).sum() / batch["answer"][:, 1:].sum()


def make_batches(
    tokenizer: Any,
    batch: int,
    seed: int,
    tasks: Sequence[str] = TASKS,
    weights: Weights = Weights(),
    pool: int = 8,
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless training batches of fresh ``train`` scenes cycling through ``tasks``; each
    group of ``pool`` batches is cut from length-sorted samples (little padding), then
    shuffled."""
    rng = random.Random(f"llm-batches/{seed}")
    subjects = {
        tokenizer.convert_tokens_to_ids(text): f"{m.colour} {m.shape}"
        for text in phrases()
        for m in mentions(text)
    }
    start = 0
    while True:
        chunk = samples(batch * pool, seed, "train", start=start, tasks=tasks)
        start += len(chunk)
        rows = []
        for sample in chunk:
            ids, prompt_len = encode(tokenizer, sample)
            rows.append((ids, prompt_len, weights.of(sample, ids, prompt_len, subjects)))
        rows.sort(key=lambda row: len(row[0]))
        groups = [rows[i : i + batch] for i in range(0, len(rows), batch)]
        rng.shuffle(groups)
        for group in groups:
            yield collate(group, tokenizer.pad_token_id)


def train(
    out: Path,
    *,
    size: str = "full",
    seed: int = 0,
    log: Callable[[str], None] = print,
    steps: int | None = None,
    eval_n: int | None = None,
) -> dict[str, Any]:
    """Train the LLM into ``out``; returns training stats and held-out quality.

    ``eval_n`` held-out samples per task are evaluated (default: 200 at full size, none at
    smoke); ``steps`` overrides the plan's.
    """
    run = TrainingRun.start(PLANS, out, size=size, seed=seed, steps=steps, eval_n=eval_n, log=log)
    plan = run.plan
    # the tokenizer's corpus comes from scenes the batches (which start at index 0) also use
    tokenizer = build_tokenizer(samples(plan["corpus"], seed, "train"), plan["vocab"])
    model = build_model(tokenizer, plan)
    init_embeddings(model, tokenizer, seed)
    batches = make_batches(
        tokenizer,
        plan["batch"],
        seed,
        ["claims"] * plan["claims_share"] + ["compose"],
        Weights(compose=plan["compose_weight"], echo=plan["echo_weight"]),
    )
    stats = run.fit(model, Phase(batches, plan["steps"], plan["lr"], loss_on))
    model.save_pretrained(run.out)
    tokenizer.save_pretrained(run.out)
    return run.finish(
        stats,
        evaluate,
        parameters=sum(p.numel() for p in model.parameters()),
        total_s=round(time.perf_counter() - run.started, 2),
    )


# --- held-out evaluation through factcap's own backend ---------------------------------------


def evaluate(
    out: Path, n: int = 200, seed: int = 0, batch: int = 16, max_new_tokens: int = 320
) -> dict[str, Any]:
    """Held-out quality of the LLM in ``out``, generated through
    ``registry.build("llm", "hf:<out>")``: on ``n`` claims samples, how many answers
    ``parse_claims`` reads and how many equal the target exactly; on ``n`` compose samples
    (half checked, half all-uncertain), exact matches per regime; seconds per sample."""
    from factcap.backends import registry

    llm = registry.build("llm", f"hf:{Path(out).resolve()}", device="cpu", dtype="float32")
    rng = random.Random(f"llm-eval/{seed}")
    test = world.scenes(2 * n, seed, "test")
    claims = [make_sample("claims", s, rng) for s in test[:n]]
    compose = [make_sample("compose", s, rng, checked=i % 2 == 0) for i, s in enumerate(test[n:])]
    report: dict[str, Any] = {"n": n}
    for task, group in (("claims", claims), ("compose", compose)):
        started = time.perf_counter()
        answers: list[str] = []
        for i in range(0, len(group), batch):
            conversations = [[{"role": "user", "content": s.prompt}] for s in group[i : i + batch]]
            answers += llm.chat(conversations, max_new_tokens=max_new_tokens)
        report[f"{task}_s_per_sample"] = round((time.perf_counter() - started) / len(group), 4)
        exact = [a == s.answer for a, s in zip(answers, group, strict=True)]
        report[f"{task}_exact"] = round(sum(exact) / len(group), 4)
        if task == "claims":
            report["claims_parsed"] = round(sum(map(_parses, answers)) / len(group), 4)
            same = [
                _claim_set(a) == _claim_set(s.answer) for a, s in zip(answers, group, strict=True)
            ]
            report["claims_same_set"] = round(sum(same) / len(group), 4)
        else:
            for regime in ("checked", "uncertain"):
                hits = [e for e, s in zip(exact, group, strict=True) if s.regime == regime]
                report[f"compose_exact_{regime}"] = round(sum(hits) / max(1, len(hits)), 4)
        report[f"{task}_errors"] = [
            {"want": s.answer, "got": a}
            for a, s in zip(answers, group, strict=True)
            if a != s.answer
        ][:3]
    return report


def _claim_set(answer: str) -> set[tuple[str, str]] | None:
    """The claims of an answer as a set of ``(kind, text)``; None if it does not parse."""
    try:
        return {(c.kind, c.text) for c in parse_claims(answer, MAX_CLAIMS)}
    except ParseError:
        return None


def _parses(answer: str) -> bool:
    try:
        parse_claims(answer, MAX_CLAIMS)
    except ParseError:
        return False
    return True
