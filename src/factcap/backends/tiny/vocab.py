"""Tokenizers for the tiny checkpoints, built offline and deterministically.

The vocabulary comes from a small fixed English corpus of caption-like sentences, so a
random-weight model still "speaks" words (random ones), and the real tokenizer classes of each
family (WordPiece for BERT-style text towers, CLIP's BPE, byte-level BPE for decoders) load it
through ``from_pretrained`` exactly as they would a hub checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = """
a photo of a cat sitting on a red sofa next to a window .
two dogs are playing with a ball on the green grass in a park .
a man in a blue shirt is riding a bicycle down the street .
a woman holding an umbrella walks past a yellow taxi .
a plate of food with rice , vegetables and a fork on a wooden table .
an astronaut in a white suit stands beside an american flag .
a cup of coffee on a saucer with a spoon and a small cookie .
a rocket launching into the sky with smoke and fire below it .
a motorcycle parked on the side of a road near a building .
three birds are sitting on a wire above the city .
the sign says open in large black letters .
a small boy wearing a hat is eating an apple .
a large brown horse stands in a field under a cloudy sky .
there is a laptop , a phone and a book on the desk .
a close up of a flower with pink petals and a bee .
a train is stopped at the station while people wait .
a bowl of fruit with oranges , bananas and a green apple .
one car , two trucks and a bus drive along the highway .
a kitchen with a white refrigerator , an oven and a sink .
the girl is smiling and holding a black and white cat .
yes no left right top bottom above below behind in front of .
is there a ? how many are there ? what color is the ? does this figure show ?
""".split()

SPECIALS_BERT = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def words() -> list[str]:
    """The corpus vocabulary, sorted, without duplicates."""
    return sorted(set(CORPUS))


def corpus_sentences() -> list[str]:
    """The corpus as sentences (used to train byte-level BPE)."""
    text = " ".join(CORPUS)
    return [s.strip() + " ." for s in text.split(" . ") if s.strip()]


def write_wordpiece_vocab(out: Path, extra: list[str] | None = None) -> Path:
    """A BERT ``vocab.txt``: specials, ASCII characters and ``##`` pieces, then the words."""
    chars = [chr(c) for c in range(33, 127)]
    pieces = [f"##{c}" for c in chars]
    vocab = SPECIALS_BERT + (extra or []) + chars + pieces + [w for w in words() if w not in chars]
    path = Path(out) / "vocab.txt"
    path.write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    return path


def write_clip_bpe(out: Path) -> tuple[Path, Path]:
    """CLIP-style BPE files (``vocab.json``, ``merges.txt``) that spell every corpus word.

    Words are built by left-to-right merges of their characters; each word's final symbol
    carries CLIP's ``</w>`` end-of-word marker.
    """
    out = Path(out)
    tokens: list[str] = []
    for c in range(33, 127):
        tokens.append(chr(c))
    for c in range(33, 127):
        tokens.append(chr(c) + "</w>")
    merges: list[tuple[str, str]] = []
    for word in words():
        if len(word) < 2:
            continue
        prefix = word[0]
        for i, ch in enumerate(word[1:], start=1):
            last = i == len(word) - 1
            right = ch + ("</w>" if last else "")
            merged = prefix + right
            if (prefix, right) not in merges:
                merges.append((prefix, right))
            if merged not in tokens:
                tokens.append(merged)
            prefix = merged
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    vocab_path = out / "vocab.json"
    merges_path = out / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_path.write_text(
        "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n", encoding="utf-8"
    )
    return vocab_path, merges_path


def byte_level_bpe(vocab_size: int = 600, specials: list[str] | None = None):
    """A GPT-2-style byte-level BPE :class:`tokenizers.Tokenizer` trained on the corpus.

    Training is deterministic for a fixed corpus and vocabulary size.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials or ["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_sentences() * 4, trainer=trainer)
    return tok
