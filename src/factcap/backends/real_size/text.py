"""Sentence encoders at their published sizes (all-MiniLM-L6-v2) with random weights, with
the sentence-transformers side files (mean pooling, ``max_seq_length``) the backend reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from factcap.backends.real_size import common, tokens

BERT_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}


def build_sentence_encoder(arch: str, out: Path, layers: int | None = None) -> dict[str, Any]:
    """``BertModel`` of ``arch`` with a BERT-sized WordPiece tokenizer into ``out``."""
    from transformers import BertTokenizer

    spec = common.load_spec(arch)
    config = common.cut_layers(spec, layers)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = tokens.write_wordpiece(out, config["vocab_size"], BERT_IDS)
    max_length = spec["processor"]["max_seq_length"]
    tokenizer = BertTokenizer(vocab=str(path), model_max_length=max_length)
    path.unlink()
    config["pad_token_id"] = tokenizer.pad_token_id
    model = common.build_model(spec, common.transformers_config(config), out, tokenizer)
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_length, "do_lower_case": False}), encoding="utf-8"
    )
    pooling = out / "1_Pooling"
    pooling.mkdir(exist_ok=True)
    (pooling / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": config["hidden_size"],
                "pooling_mode_cls_token": False,
                "pooling_mode_mean_tokens": True,
            }
        ),
        encoding="utf-8",
    )
    return common.result(arch, spec, config, model)
