"""Kosmos-2 at its published size with random weights: an XLM-R style unigram tokenizer
filled so that, once ``Kosmos2Processor`` adds its grounding tags and 1,024
``<patch_index_XXXX>`` tokens, it has the model's 65,037 tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factcap.backends.real_size import common, tokens

#: Tokens Kosmos2Processor adds besides the patch-index tokens (its grounding tags and
#: markers: 11 in transformers 5); checked after the build.
_TAGS = 11


def build_kosmos2(arch: str, out: Path, layers: int | None = None) -> dict[str, Any]:
    """``Kosmos2ForConditionalGeneration`` of ``arch`` into ``out``; ``layers`` cuts the
    vision tower and the text decoder."""
    from transformers import Kosmos2Processor, XLMRobertaTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    spec = common.load_spec(arch)
    config = common.cut_layers(spec, layers)
    proc = spec["processor"]
    text = config["text_config"]
    base = text["vocab_size"] - proc["num_patch_index_tokens"] - _TAGS
    size = proc["image_size"]
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    for _ in range(2):  # a second try if this transformers adds more tags than _TAGS
        tokenizer = XLMRobertaTokenizer(vocab=tokens.unigram_pieces(base))
        processor = Kosmos2Processor(
            image_processor, tokenizer, num_patch_index_tokens=proc["num_patch_index_tokens"]
        )
        excess = len(processor.tokenizer) - text["vocab_size"]
        if excess <= 0:
            break
        base -= excess
    if len(processor.tokenizer) > text["vocab_size"]:
        raise RuntimeError(f"{arch}: {len(processor.tokenizer)} tokens > {text['vocab_size']}")
    text.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = common.build_model(spec, common.transformers_config(config), out, processor)
    return common.result(arch, spec, config, model)
