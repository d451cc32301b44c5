"""CLIP at its published sizes (ViT-B/32, ViT-L/14) with random weights and a CLIP BPE
tokenizer of CLIP's 49,408 tokens (``<|startoftext|>`` / ``<|endoftext|>`` last, as in CLIP)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factcap.backends.real_size import common, tokens


def build_clip(arch: str, out: Path, layers: int | None = None) -> dict[str, Any]:
    """``CLIPModel`` of ``arch`` into ``out``; ``layers`` cuts both towers."""
    from transformers import CLIPImageProcessorPil, CLIPProcessor, CLIPTokenizer

    spec = common.load_spec(arch)
    config = common.cut_layers(spec, layers)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = config["text_config"]
    vocab_path, merges_path = tokens.write_clip_bpe(out, text["vocab_size"])
    tokenizer = CLIPTokenizer(
        vocab=str(vocab_path),
        merges=str(merges_path),
        model_max_length=text["max_position_embeddings"],
    )
    vocab_path.unlink()
    merges_path.unlink()
    size = spec["processor"]["image_size"]
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    text.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model = common.build_model(spec, common.transformers_config(config), out, processor)
    return common.result(arch, spec, config, model)
