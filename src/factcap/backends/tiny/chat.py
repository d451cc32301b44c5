"""Tiny chat checkpoints: a Llama causal LM, a LLaVA chat VLM and a CLIP dual encoder.

Each builder writes a complete hub-style checkpoint (config, safetensors weights, generation
config, tokenizer / processor with its chat template) that loads with the Auto classes:

>>> import tempfile
>>> from pathlib import Path
>>> from transformers import AutoModelForCausalLM, AutoTokenizer
>>> out = Path(tempfile.mkdtemp())
>>> build_causal_lm(out)
>>> AutoModelForCausalLM.from_pretrained(out).config.model_type
'llama'
>>> "<|im_start|>user" in AutoTokenizer.from_pretrained(out).apply_chat_template(
...     [{"role": "user", "content": "hi"}], tokenize=False)
True
"""

from __future__ import annotations

from pathlib import Path

from factcap.backends.tiny import vocab

BOS, EOS, PAD = "<|endoftext|>", "<|im_end|>", "<|pad|>"
CHAT_SPECIALS = [BOS, "<|im_start|>", EOS, PAD]
IMAGE_TOKEN = "<image>"

# ChatML, as Qwen2 uses it. ``content`` is either a string or a list of typed parts; an
# image part becomes the processor's image placeholder, which it expands to one token per patch.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '" + IMAGE_TOKEN + "' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Shared tiny vision tower: 32 px images cut into 8 px patches (16 patches + CLS).
IMAGE_SIZE = 32
PATCH_SIZE = 8


def chat_tokenizer(with_image_token: bool = False):
    """The byte-level BPE of :mod:`vocab` as a transformers fast tokenizer with a chat template."""
    from transformers import PreTrainedTokenizerFast

    specials = CHAT_SPECIALS + ([IMAGE_TOKEN] if with_image_token else [])
    extra = {"image_token": IMAGE_TOKEN} if with_image_token else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=vocab.byte_level_bpe(vocab_size=600, specials=specials),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=None,
        extra_special_tokens=extra,
        chat_template=CHAT_TEMPLATE,
        # the pipeline's real prompts run to ~1,000 tokens of this small vocabulary
        model_max_length=4096,
        padding_side="left",
    )


def _llama_config(tokenizer, **overrides):
    from transformers import LlamaConfig

    kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def _generation_config(tokenizer):
    from transformers import GenerationConfig

    # Stop at the end of the assistant turn (or the end of text), as chat checkpoints do.
    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.bos_token_id],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )


def _clip_vision_config(**overrides):
    from transformers import CLIPVisionConfig

    kwargs = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=32,
    )
    kwargs.update(overrides)
    return CLIPVisionConfig(**kwargs)


def _clip_image_processor():
    # The PIL flavour needs no torchvision and loads the same through AutoProcessor.
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )


def build_causal_lm(out: Path) -> None:
    """A 2-layer Llama (hidden 64) with a ChatML byte-level BPE tokenizer."""
    import torch
    from transformers import LlamaForCausalLM

    out = Path(out)
    tokenizer = chat_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(_llama_config(tokenizer))
    model.generation_config = _generation_config(tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_chat_vlm(out: Path) -> None:
    """A LLaVA: 2-layer CLIP vision tower (32 px, 8 px patches) + 2-layer Llama, with its
    LlavaProcessor (CLIP image processor, the chat tokenizer plus ``<image>``)."""
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    out = Path(out)
    tokenizer = chat_tokenizer(with_image_token=True)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    config = LlavaConfig(
        vision_config=_clip_vision_config(),
        text_config=_llama_config(tokenizer),
        image_token_id=image_token_id,
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",  # drop CLS: one token per patch
        vision_feature_layer=-2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    processor = LlavaProcessor(
        image_processor=_clip_image_processor(),
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)


def build_clip(out: Path) -> None:
    """A CLIP with 2-layer text and vision towers (width 32, 77-token context, 32 px images)."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTextConfig, CLIPTokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = vocab.write_clip_bpe(out)
    tokenizer = CLIPTokenizer(vocab=str(vocab_path), merges=str(merges_path), model_max_length=77)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=32,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = CLIPConfig(
        text_config=text_config.to_dict(),
        vision_config=_clip_vision_config().to_dict(),
        projection_dim=32,
    )
    torch.manual_seed(0)
    model = CLIPModel(config)
    processor = CLIPProcessor(image_processor=_clip_image_processor(), tokenizer=tokenizer)
    model.save_pretrained(out)
    processor.save_pretrained(out)
