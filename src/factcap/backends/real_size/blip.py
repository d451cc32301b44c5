"""BLIP checkpoints at their published sizes, with random weights, built offline.

``configs/<arch>.json`` holds the published ``config.json`` of a Salesforce BLIP checkpoint
(hidden sizes, layers, heads, vocabulary, image and patch size). :func:`build_blip` builds
that architecture (``BlipForQuestionAnswering`` or ``BlipForConditionalGeneration``, as the
config's ``architectures`` says) with seeded random weights, a ``BlipProcessor`` at the
config's image size and a WordPiece tokenizer of the real vocabulary SIZE (30 524: BERT's
layout of special ids, the tiny corpus words, filler tokens, then BLIP's ``[DEC]`` and
``[ENC]``), and saves it so that ``hf:<out>`` loads through factcap's registry like a hub
checkpoint. The weights are random: the model measures speed and memory, not quality.

>>> sorted(BLIP_ARCHS)
['blip-image-captioning-large', 'blip-vqa-base', 'blip-vqa-capfilt-large']
>>> reduced_config("blip-vqa-base", layers=1)["vision_config"]["num_hidden_layers"]
1
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from factcap.backends.tiny import vocab

CONFIGS = Path(__file__).parent / "configs"
BLIP_ARCHS = ("blip-image-captioning-large", "blip-vqa-base", "blip-vqa-capfilt-large")
# The published vision towers are initialised at 1e-10, which leaves a RANDOM tower blind
# (every image gives the same features); the builder uses 0.02 there, as for the text model.
VISION_INIT = 0.02
BERT_VOCAB = 30522  # bert-base-uncased; BLIP adds [DEC] (30522) and [ENC] (30523)


def published_config(arch: str) -> dict[str, Any]:
    """The published ``config.json`` of ``arch`` (keys starting with ``_`` are notes)."""
    path = CONFIGS / f"{arch}.json"
    if arch not in BLIP_ARCHS or not path.is_file():
        raise ValueError(f"unknown BLIP architecture {arch!r}; known: {', '.join(BLIP_ARCHS)}")
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def reduced_config(arch: str, layers: int | None = None) -> dict[str, Any]:
    """``arch``'s config with every transformer stack (vision, text) cut to at most
    ``layers`` layers (None: as published) and the vision tower initialised at 0.02."""
    if layers is not None and layers < 1:
        raise ValueError(f"layers must be >= 1, got {layers}")
    config = published_config(arch)
    for part in ("vision_config", "text_config"):
        stack = dict(config[part])
        if layers is not None:
            stack["num_hidden_layers"] = min(layers, stack["num_hidden_layers"])
        config[part] = stack
    config["vision_config"]["initializer_range"] = VISION_INIT
    return config


def _bert_layout_vocab(size: int) -> list[str]:
    """``size`` WordPiece tokens laid out like bert-base-uncased's special ids ([PAD] 0,
    [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103), then ASCII characters, ``##`` pieces and
    the tiny corpus words (so "yes" and "no" are whole tokens), then filler."""
    head = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = [chr(c) for c in range(33, 127)]
    known = list(dict.fromkeys([*head, *chars, *(f"##{c}" for c in chars), *vocab.words()]))
    filler = (f"[unused{i}]" for i in range(99, 99 + size))
    tokens = known + [t for t, _ in zip(filler, range(size - len(known)), strict=False)]
    return tokens[:size]


def _processor(out: Path, image_size: int, vocab_size: int) -> Any:
    from transformers import BertTokenizer, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    path = Path(out) / "vocab.txt"
    words = _bert_layout_vocab(vocab_size - 2) + ["[DEC]", "[ENC]"]
    path.write_text("\n".join(words) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(path), bos_token="[DEC]", extra_special_tokens=["[ENC]"])
    path.unlink()  # save_pretrained writes the tokenizer files itself
    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    return BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_blip(arch: str, out: Path, layers: int | None = None) -> dict[str, Any]:
    """Build ``arch`` (see :data:`BLIP_ARCHS`) with random weights (seed 0) into ``out``.

    Returns ``{"arch", "parameters", "layers": {"vision", "text"}, "reduced"}``; ``layers``
    cuts every stack to that many layers (a quick, smaller model of the same widths).
    """
    import torch
    import transformers

    config_dict = reduced_config(arch, layers)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text, vision = config_dict["text_config"], config_dict["vision_config"]
    processor = _processor(out, vision["image_size"], text["vocab_size"])
    tokenizer = processor.tokenizer
    ids = {"bos": tokenizer.bos_token_id, "pad": tokenizer.pad_token_id}
    ids["sep"] = tokenizer.sep_token_id
    expected = {
        "bos": text["bos_token_id"],
        "pad": text["pad_token_id"],
        "sep": text["sep_token_id"],
    }
    if len(tokenizer) != text["vocab_size"] or ids != expected:
        raise RuntimeError(f"{arch}: tokenizer {len(tokenizer)} tokens, ids {ids}; want {expected}")
    architecture = config_dict.pop("architectures")[0]
    config = transformers.BlipConfig(**config_dict)
    config.architectures = [architecture]
    torch.manual_seed(0)
    model = getattr(transformers, architecture)(config).eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    published = published_config(arch)
    actual = {
        "vision": config.vision_config.num_hidden_layers,
        "text": config.text_config.num_hidden_layers,
    }
    reduced = actual != {
        "vision": published["vision_config"]["num_hidden_layers"],
        "text": published["text_config"]["num_hidden_layers"],
    }
    return {
        "arch": arch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "layers": actual,
        "reduced": reduced,
    }
