"""Chat models at their published sizes with random weights: Qwen2.5 causal LMs, LLaVA-1.5 and
SmolVLM (Idefics3), each with a synthetic byte-level BPE tokenizer of the real vocabulary size
and a chat template, saved so ``hf:<out>`` loads through the registry.

>>> import tempfile
>>> from factcap.backends import registry
>>> out = Path(tempfile.mkdtemp()) / "llm"
>>> build_causal_lm("qwen2.5-1.5b-instruct", out, layers=1)["layers"]
{'num_hidden_layers': 1}
>>> llm = registry.build("llm", f"hf:{out}")
>>> len(llm.chat([[{"role": "user", "content": "Name a fruit."}]], max_new_tokens=2))
1
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factcap.backends.real_size import common, tokens
from factcap.backends.tiny.chat import CHAT_TEMPLATE

IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"

# SmolVLM's template: "<|im_start|>User:<image>Describe.<end_of_utterance>\nAssistant:".
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}"
    "{% endif %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def _fast(tok: Any, **kwargs: Any) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, padding_side="left", **kwargs)


def build_causal_lm(arch: str, out: Path, layers: int | None = None) -> dict[str, Any]:
    """A Qwen2.5 chat LM: byte-level BPE of ``vocab_size - 3`` tokens then ``<|endoftext|>``,
    ``<|im_start|>``, ``<|im_end|>`` (Qwen's order), ChatML template, greedy stop at
    ``<|im_end|>`` / ``<|endoftext|>``."""
    spec = common.load_spec(arch)
    config = common.cut_layers(spec, layers)
    base = min(151643, config["vocab_size"] - 3)
    tokenizer = _fast(
        tokens.byte_bpe(base, specials=[ENDOFTEXT, IM_START, IM_END]),
        bos_token=ENDOFTEXT,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        chat_template=CHAT_TEMPLATE.replace("{{ bos_token }}", ""),
        model_max_length=config["max_position_embeddings"],
    )
    cfg = common.transformers_config(
        {
            **config,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
    )
    generation = common.chat_generation_config(tokenizer, [IM_END, ENDOFTEXT])
    model = common.build_model(spec, cfg, out, tokenizer, generation)
    return common.result(arch, spec, config, model)


def build_llava(arch: str, out: Path, layers: int | None = None) -> dict[str, Any]:
    """LLaVA-1.5: CLIP ViT-L/14-336 + Llama-2-7B shapes; ``<image>`` and ``<pad>`` at the
    config's ids (32000, 32001) after a BPE of 32,000 tokens; ``<s> </s> <unk>`` and the
    ChatML markers after those (the real ones sit at 0-2; the real template is Vicuna's
    "USER: ... ASSISTANT:", this one ChatML)."""
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    spec = common.load_spec(arch)
    config = common.cut_layers(spec, layers)
    image_id = config["image_token_index"]
    bpe = tokens.byte_bpe(image_id, specials=["<image>", "<pad>"])
    tokenizer = _fast(
        bpe,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        chat_template=CHAT_TEMPLATE,
        model_max_length=config["text_config"]["max_position_embeddings"],
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IM_START, IM_END]})
    if tokenizer.convert_tokens_to_ids("<image>") != image_id:
        raise RuntimeError(f"{arch}: <image> is not at id {image_id}")
    proc = spec["processor"]
    size = proc["image_size"]
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        ),
        tokenizer=tokenizer,
        patch_size=proc["patch_size"],
        vision_feature_select_strategy=config["vision_feature_select_strategy"],
        num_additional_image_tokens=proc["num_additional_image_tokens"],
        chat_template=CHAT_TEMPLATE,
        image_token="<image>",
    )
    text = config["text_config"]
    text.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    cfg = common.transformers_config(config)
    generation = common.chat_generation_config(tokenizer, [IM_END, "</s>"])
    model = common.build_model(spec, cfg, out, processor, generation)
    return common.result(arch, spec, config, model)


def build_idefics3(arch: str, out: Path, layers: int | None = None) -> dict[str, Any]:
    """SmolVLM (Idefics3): images split into 512 px tiles plus a global view, each tile 64
    tokens after the pixel shuffle, as the published processor does; SmolVLM's chat template."""
    from transformers import Idefics3ImageProcessorPil, Idefics3Processor

    spec = common.load_spec(arch)
    config = common.cut_layers(spec, layers)
    grid = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    specials = [ENDOFTEXT, IM_START, IM_END, "<fake_token_around_image>", "<image>"]
    specials += ["<end_of_utterance>", "<global-img>", *grid]
    text = config["text_config"]
    bpe = tokens.byte_bpe(text["vocab_size"] - len(specials), specials=specials)
    tokenizer = _fast(
        bpe,
        bos_token=IM_START,
        eos_token="<end_of_utterance>",
        pad_token=ENDOFTEXT,
        unk_token=ENDOFTEXT,
        chat_template=SMOLVLM_TEMPLATE,
        model_max_length=text["max_position_embeddings"],
    )
    proc = spec["processor"]
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": proc["longest_edge"]},
        max_image_size={"longest_edge": proc["max_image_size"]},
        do_image_splitting=True,
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=proc["image_seq_len"],
        chat_template=SMOLVLM_TEMPLATE,
    )
    text.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config["image_token_id"] = tokenizer.convert_tokens_to_ids("<image>")
    cfg = common.transformers_config(config)
    generation = common.chat_generation_config(tokenizer, ["<end_of_utterance>", ENDOFTEXT])
    model = common.build_model(spec, cfg, out, processor, generation)
    return common.result(arch, spec, config, model)
