"""Grounding DINO at its published sizes (tiny: Swin-T, base: Swin-B) with random weights.

The text tower reads a WordPiece vocabulary of BERT's size whose special and delimiter tokens
sit at bert-base-uncased's ids: transformers' Grounding DINO finds phrase boundaries by those
hard-coded ids ([CLS] 101, [SEP] 102, "." 1012, "?" 1029). The processor resizes to the
published 800 px short edge (at most 1333 px long).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factcap.backends.real_size import common, tokens

BERT_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
BERT_IDS |= {".": 1012, "?": 1029}


def build_grounding_dino(arch: str, out: Path, layers: int | None = None) -> dict[str, Any]:
    """``GroundingDinoForObjectDetection`` of ``arch`` into ``out``; ``layers`` cuts the Swin
    stages, the BERT tower and the encoder/decoder stacks."""
    from transformers import BertTokenizer, GroundingDinoImageProcessorPil, GroundingDinoProcessor

    spec = common.load_spec(arch)
    config = common.cut_layers(spec, layers)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = tokens.write_wordpiece(out, config["text_config"]["vocab_size"], BERT_IDS)
    tokenizer = BertTokenizer(vocab=str(path), model_max_length=config["max_text_len"])
    path.unlink()  # save_pretrained writes the tokenizer files itself
    proc = spec["processor"]
    image_processor = GroundingDinoImageProcessorPil(
        size={"shortest_edge": proc["shortest_edge"], "longest_edge": proc["longest_edge"]}
    )
    processor = GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config["text_config"]["pad_token_id"] = tokenizer.pad_token_id
    model = common.build_model(spec, common.transformers_config(config), out, processor)
    return common.result(arch, spec, config, model)
