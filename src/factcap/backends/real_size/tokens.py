"""Synthetic tokenizers of a real vocabulary SIZE, built offline for the real-size checkpoints.

A random-weight model of a published shape needs a tokenizer whose ids cover its embedding
table and whose special tokens sit where the config expects them; the tokens themselves can be
made up. Each builder here starts from a vocabulary learnt on factcap's own English (the tiny
corpus, the prompt templates and the caption styles, so the pipeline's prompts take about as
many tokens as with a real tokenizer) and fills it with filler tokens up to the published size.

>>> tok = byte_bpe(5000, specials=["<|endoftext|>"])
>>> tok.get_vocab_size(), tok.token_to_id("<|endoftext|>")
(5001, 5000)
>>> ids = wordpiece_vocab(30522, fixed={"[PAD]": 0, "[CLS]": 101, ".": 1012})
>>> len(ids), ids[101], ids[1012]
(30522, '[CLS]', '.')
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from factcap.backends.tiny import vocab

#: How many tokens byte-level BPE learns from factcap's text before filler takes over.
LEARNT_BPE = 3000
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_SYLLABLES = [c + v for c in _CONSONANTS for v in _VOWELS]


def filler_word(i: int) -> str:
    """The ``i``-th made-up word (three syllables, distinct for i < 343,000), so that text a
    random model writes reads as words: the pipeline's fallback then finds content words in
    it and the checking stages get work, as with a real model.

    >>> filler_word(0), filler_word(1), filler_word(70)
    ('bababa', 'bebaba', 'babeba')
    """
    n = len(_SYLLABLES)
    return _SYLLABLES[i % n] + _SYLLABLES[(i // n) % n] + _SYLLABLES[(i // n // n) % n]


@cache
def english_text() -> tuple[str, ...]:
    """Sentences of factcap's own English: the tiny corpus, prompt templates, caption styles."""
    root = resources.files("factcap") / "prompts"
    lines = list(vocab.corpus_sentences())
    for folder in ("templates", "styles"):
        for path in sorted((root / folder).iterdir(), key=lambda p: p.name):
            if path.name.endswith(".txt"):
                text = path.read_text(encoding="utf-8")
                lines += [line.strip() for line in text.splitlines() if line.strip()]
    return tuple(lines)


def byte_bpe(base_size: int, specials: list[str] | None = None) -> Any:
    """A byte-level BPE :class:`tokenizers.Tokenizer` of ``base_size`` ordinary tokens
    (learnt, then made-up filler words, :func:`filler_word`, each with its leading space),
    then ``specials`` at the ids right after them, in order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=min(base_size, LEARNT_BPE),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(english_text()) * 2, trainer=trainer)
    data = json.loads(tok.to_str())
    table: dict[str, int] = data["model"]["vocab"]
    filler = (f"Ġ{filler_word(i)}" for i in range(base_size * 2))
    while len(table) < base_size:
        token = next(filler)
        if token not in table:
            table[token] = len(table)
    tok = Tokenizer.from_str(json.dumps(data))
    if specials:
        tok.add_special_tokens(specials)
    return tok


def wordpiece_vocab(size: int, fixed: dict[str, int]) -> list[str]:
    """A BERT ``vocab.txt`` as a list of ``size`` tokens: ``fixed`` tokens at their ids,
    then ASCII characters, ``##`` pieces and words of factcap's English in the free slots,
    then ``[unused<i>]`` filler (as BERT's own vocabulary fills its gaps)."""
    slots: list[str | None] = [None] * size
    for token, idx in fixed.items():
        slots[idx] = token
    chars = [chr(c) for c in range(33, 127)]
    words = sorted({w.lower() for line in english_text() for w in line.split() if w.isalpha()})
    wanted = [t for t in dict.fromkeys([*chars, *(f"##{c}" for c in chars), *words])]
    rest = iter(t for t in wanted if t not in fixed)
    for idx, slot in enumerate(slots):
        if slot is None:
            slots[idx] = next(rest, None) or f"[unused{idx}]"
    return [s or "" for s in slots]


def write_wordpiece(out: Path, size: int, fixed: dict[str, int]) -> Path:
    """Write :func:`wordpiece_vocab` to ``out/vocab.txt``; returns its path."""
    path = Path(out) / "vocab.txt"
    path.write_text("\n".join(wordpiece_vocab(size, fixed)) + "\n", encoding="utf-8")
    return path


def write_clip_bpe(out: Path, size: int) -> tuple[Path, Path]:
    """CLIP BPE files (``vocab.json``, ``merges.txt``) of ``size`` tokens: the tiny CLIP
    vocabulary, filler words, and ``<|startoftext|>`` / ``<|endoftext|>`` last (as in CLIP)."""
    vocab_path, merges_path = vocab.write_clip_bpe(Path(out))
    table = json.loads(vocab_path.read_text(encoding="utf-8"))
    ends = ["<|startoftext|>", "<|endoftext|>"]
    tokens = [t for t in table if t not in ends]
    filler = (f"w{i}</w>" for i in range(size * 2))
    known = set(tokens)
    while len(tokens) < size - len(ends):
        token = next(filler)
        if token not in known:
            tokens.append(token)
    vocab_path.write_text(
        json.dumps({t: i for i, t in enumerate(tokens + ends)}, ensure_ascii=False),
        encoding="utf-8",
    )
    return vocab_path, merges_path


def unigram_pieces(size: int) -> list[tuple[str, float]]:
    """An XLM-R style sentencepiece unigram vocabulary of ``size`` pieces: ``<s> <pad> </s>
    <unk>``, factcap's words, characters, then filler; ``<mask>`` last."""
    specials = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    words = sorted({w for line in english_text() for w in line.split() if w.isalpha()})
    pieces = [("▁" + w, -2.0 - 0.001 * i) for i, w in enumerate(words)]
    pieces += [("▁", -8.0)] + [(chr(c), -10.0) for c in range(33, 127)]
    seen: dict[str, float] = {}
    for piece, score in specials + pieces:
        seen.setdefault(piece, score)
    i = 0
    while len(seen) < size - 1:
        seen.setdefault(f"▁{filler_word(i)}", -20.0)
        i += 1
    return [*seen.items(), ("<mask>", 0.0)]
