"""Tiny BLIP, BLIP-2 and Kosmos-2 checkpoints: real architectures, random weights, built offline.

Each builder writes what a hub repository holds (``config.json``, ``model.safetensors``,
processor and tokenizer files), so the backends load it with the very same
``from_pretrained`` calls they use for ``Salesforce/blip-image-captioning-base`` and friends.

>>> import tempfile
>>> out = Path(tempfile.mkdtemp())
>>> build_blip_captioner(out)
>>> sorted(p.name for p in out.iterdir())[:3]
['config.json', 'generation_config.json', 'model.safetensors']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factcap.backends.tiny import vocab

IMAGE_SIZE = 32
PATCH_SIZE = 8
HIDDEN = 32
FFN = 64
LAYERS = 2
HEADS = 2
# BLIP-2 / Kosmos-2: how many learned queries stand for the image in the language model.
NUM_QUERY_TOKENS = 8
KOSMOS_LATENT_QUERIES = 16
# Kosmos-2 box tokens <patch_index_XXXX>: an 8 x 8 grid (the hub has 32 x 32); with 1024 of
# them a random model writes little else, and post-processing strips them all.
KOSMOS_PATCH_INDEX_TOKENS = 64


def _vision(**extra: Any) -> dict[str, Any]:
    return {
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
        # The hub default (1e-10) leaves random vision towers blind: every image looks alike.
        "initializer_range": 0.02,
        **extra,
    }


def _blip_processor(out: Path) -> Any:
    """BlipProcessor = BlipImageProcessor at IMAGE_SIZE + BertTokenizer with BLIP's [DEC]."""
    from transformers import BertTokenizer, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    # BlipImageProcessorPil saves as "BlipImageProcessor" (the torchvision one loads it where
    # torchvision is installed); constructing it directly avoids a fallback warning.
    image_processor = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    vocab_path = vocab.write_wordpiece_vocab(out, extra=["[DEC]", "[ENC]"])
    tokenizer = BertTokenizer(
        vocab=str(vocab_path), bos_token="[DEC]", extra_special_tokens=["[ENC]"]
    )
    vocab_path.unlink()  # save_pretrained writes the tokenizer files itself
    return BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def blip_config(
    tokenizer: Any,
    *,
    width: int = HIDDEN,
    heads: int = HEADS,
    text_layers: int = LAYERS,
    vision_layers: int = LAYERS,
    image_size: int = IMAGE_SIZE,
    patch: int = PATCH_SIZE,
    text_positions: int = 512,
    initializer_range: float | None = None,
) -> Any:
    """A ``BlipConfig`` for captioning or VQA: a ViT and a BERT text model of ``width``
    (feed-forward twice as wide), the token ids of ``tokenizer``; the vision tower initialised
    at 0.02. ``initializer_range`` sets the text model's and the heads' (default: the hub's).

    >>> class Tokenizer(list):  # a vocabulary of 40 with BLIP's special token ids
    ...     bos_token_id, pad_token_id, sep_token_id = 1, 0, 2
    >>> config = blip_config(Tokenizer(range(40)), width=64, heads=2)
    >>> config.text_config.intermediate_size, config.vision_config.initializer_range
    (128, 0.02)
    """
    from transformers import BlipConfig

    widened = {} if initializer_range is None else {"initializer_range": initializer_range}
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": width,
        "encoder_hidden_size": width,
        "intermediate_size": 2 * width,
        "projection_dim": width,
        "num_hidden_layers": text_layers,
        "num_attention_heads": heads,
        "max_position_embeddings": text_positions,
        "bos_token_id": tokenizer.bos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "eos_token_id": tokenizer.sep_token_id,
        **widened,
    }
    vision = _vision(
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=vision_layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch,
        projection_dim=width,
    )
    return BlipConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=width,
        image_text_hidden_size=width,
        **widened,
    )


def _save(model: Any, processor: Any, out: Path) -> None:
    model.save_pretrained(out)
    processor.save_pretrained(out)


def build_blip_captioner(out: Path) -> None:
    """BlipForConditionalGeneration (2-layer ViT at 32 px, 2-layer BERT decoder, width 32)."""
    import torch
    from transformers import BlipForConditionalGeneration

    out = Path(out)
    processor = _blip_processor(out)
    torch.manual_seed(0)
    # Wider than the hub's 0.02, so that a random model's answers and words depend
    # visibly on the image and the question.
    model = BlipForConditionalGeneration(blip_config(processor.tokenizer, initializer_range=0.2))
    model.eval()
    _save(model, processor, out)


def build_blip_vqa(out: Path) -> None:
    """BlipForQuestionAnswering: vision tower, question encoder and answer decoder, width 32."""
    import torch
    from transformers import BlipForQuestionAnswering

    out = Path(out)
    processor = _blip_processor(out)
    torch.manual_seed(0)
    model = BlipForQuestionAnswering(blip_config(processor.tokenizer, initializer_range=0.2))
    model.eval()
    _save(model, processor, out)


def build_blip2(out: Path) -> None:
    """Blip2ForConditionalGeneration: ViT + Q-Former + a tiny OPT with a byte-level BPE.

    The processor expands one ``<image>`` token into ``num_query_tokens`` placeholders, which
    the model replaces by the Q-Former outputs: both read the same ``num_query_tokens`` and the
    config's ``image_token_index`` is the tokenizer's id of ``<image>``.
    """
    import torch
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        TokenizersBackend,
    )
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    out = Path(out)
    # OPT's layout: <s>=0, <pad>=1, </s>=2, <unk>=3; "</s>" doubles as BOS (prepended).
    bpe = vocab.byte_level_bpe(specials=["<s>", "<pad>", "</s>", "<unk>"])
    tokenizer = TokenizersBackend(
        tokenizer_object=bpe,
        bos_token="</s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        add_bos_token=True,
        padding_side="left",
    )
    image_processor = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = Blip2Processor(image_processor, tokenizer, num_query_tokens=NUM_QUERY_TOKENS)
    image_token_id = tokenizer.convert_tokens_to_ids(processor.image_token.content)

    opt = {
        "model_type": "opt",
        "vocab_size": len(tokenizer),
        "hidden_size": HIDDEN,
        "word_embed_proj_dim": HIDDEN,
        "ffn_dim": FFN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "max_position_embeddings": 128,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "dropout": 0.0,
    }
    qformer = {
        "vocab_size": 64,  # unused: BLIP-2 feeds the Q-Former learned queries, not words
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": FFN,
        "max_position_embeddings": 64,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    config = Blip2Config(
        vision_config=_vision(),
        qformer_config=qformer,
        text_config=opt,
        num_query_tokens=NUM_QUERY_TOKENS,
        image_text_hidden_size=HIDDEN,
        image_token_index=image_token_id,
    )
    torch.manual_seed(0)
    model = Blip2ForConditionalGeneration(config).eval()
    _save(model, processor, out)


def _unigram_vocab() -> list[tuple[str, float]]:
    """An XLM-R style sentencepiece unigram vocabulary: whole corpus words beat characters."""
    specials = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    chars = [chr(c) for c in range(33, 127)]
    # Kosmos-2's prompt words too, so "<grounding>An image of" reads as three pieces.
    words = vocab.words() + ["An", "image"]
    pieces = [("▁" + w, -2.0 - 0.01 * i) for i, w in enumerate(words)]
    pieces += [("▁", -8.0)]
    pieces += [(c, -10.0) for c in chars]
    seen: dict[str, float] = {}
    for piece, score in specials + pieces:
        seen.setdefault(piece, score)
    return [*seen.items(), ("<mask>", 0.0)]


def build_kosmos2(out: Path) -> None:
    """Kosmos2ForConditionalGeneration with an XLM-R unigram tokenizer and Kosmos-2's tags.

    ``Kosmos2Processor`` adds the grounding tags and the ``<patch_index_XXXX>`` box tokens to
    the tokenizer, as for ``microsoft/kosmos-2-patch14-224``; the text model's vocabulary
    covers them. ``latent_query_num`` is smaller than the hub's 64: the backend passes it to
    the processor as ``num_image_tokens``.
    """
    import torch
    from transformers import (
        Kosmos2Config,
        Kosmos2ForConditionalGeneration,
        Kosmos2Processor,
        XLMRobertaTokenizer,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    out = Path(out)
    tokenizer = XLMRobertaTokenizer(vocab=_unigram_vocab())
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = Kosmos2Processor(
        image_processor, tokenizer, num_patch_index_tokens=KOSMOS_PATCH_INDEX_TOKENS
    )
    text = {
        "vocab_size": len(processor.tokenizer),
        "embed_dim": HIDDEN,
        "ffn_dim": FFN,
        "layers": LAYERS,
        "attention_heads": HEADS,
        "max_position_embeddings": 128,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        # With the hub's 0.02 the random image features barely reach the logits.
        "init_std": 0.1,
    }
    config = Kosmos2Config(
        text_config=text, vision_config=_vision(), latent_query_num=KOSMOS_LATENT_QUERIES
    )
    torch.manual_seed(0)
    model = Kosmos2ForConditionalGeneration(config).eval()
    _save(model, processor, out)
