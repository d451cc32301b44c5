"""Tiny zero-shot detectors: Grounding DINO (Swin + BERT) and OWLv2 (CLIP-style ViT).

Both are the real transformers architectures with their real processors, shrunk to a few
layers of width 32 and a 64-pixel input, with weights drawn from a fixed seed.
"""

from __future__ import annotations

from pathlib import Path

from factcap.backends.tiny import vocab

IMAGE_SIZE = 64  # OWLv2: every image is padded to a square and resized to this
# Grounding DINO keeps the aspect ratio. Its coarsest feature level is the last Swin stage
# (stride 32) halved once more; at 64 px it would be 1 x 1, which GroupNorm refuses for a
# single image, so the short edge is 96 (3 x 3, then 2 x 2).
GDINO_SHORT_EDGE = 96
GDINO_LONG_EDGE = 128

# Grounding DINO's text encoder finds phrase boundaries by hard-coded bert-base-uncased token
# ids (transformers' SPECIAL_TOKENS: [CLS]=101, [SEP]=102, "."=1012, "?"=1029), so the tiny
# vocabulary keeps BERT's id layout for those tokens.
_BERT_FIXED_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
_BERT_FIXED_IDS |= {".": 1012, "?": 1029}


def _bert_layout_vocab(out: Path) -> int:
    """Rewrite ``out/vocab.txt`` so its special and delimiter tokens sit at BERT's ids.

    Free slots are filled with ``[unusedN]`` as in BERT's own vocabulary; returns the size.
    """
    path = vocab.write_wordpiece_vocab(out)
    tokens = [t for t in path.read_text(encoding="utf-8").splitlines() if t]
    size = max(max(_BERT_FIXED_IDS.values()) + 1, len(tokens) + 1)
    slots: list[str | None] = [None] * size
    for token, idx in _BERT_FIXED_IDS.items():
        slots[idx] = token
    rest = iter(t for t in tokens if t not in _BERT_FIXED_IDS)
    free = (i for i, s in enumerate(slots) if s is None)
    for idx, token in zip(free, rest, strict=False):
        slots[idx] = token
    layout = [s if s is not None else f"[unused{i}]" for i, s in enumerate(slots)]
    path.write_text("\n".join(layout) + "\n", encoding="utf-8")
    return len(layout)


def build_grounding_dino(out: Path) -> None:
    """Write a tiny ``GroundingDinoForObjectDetection`` checkpoint and its processor to ``out``.

    Backbone: a 4-stage Swin of width 16 (transformers' own, no timm, nothing downloaded);
    text tower: a 2-layer BERT of width 32 over the tiny WordPiece vocabulary.
    """
    import torch
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab_size = _bert_layout_vocab(out)
    tokenizer = BertTokenizer.from_pretrained(str(out), model_max_length=256)
    image_processor = GroundingDinoImageProcessor(
        size={"shortest_edge": GDINO_SHORT_EDGE, "longest_edge": GDINO_LONG_EDGE}
    )
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(
        out
    )

    backbone = SwinConfig(
        image_size=IMAGE_SIZE,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 2, 2],
        window_size=4,
        mlp_ratio=2.0,
        out_indices=[2, 3, 4],
    )
    text = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        pad_token_id=0,
    )
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        num_queries=30,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_n_points=2,
        decoder_n_points=2,
        num_feature_levels=4,
        max_text_len=256,
    )
    torch.manual_seed(0)
    model = GroundingDinoForObjectDetection(config).eval()
    model.save_pretrained(out)


def build_owlv2(out: Path) -> None:
    """Write a tiny ``Owlv2ForObjectDetection`` checkpoint and its processor to ``out``.

    A 2-layer ViT (patch 8 on 64 px: 64 box predictions per image) and a 2-layer text tower
    over the tiny CLIP BPE vocabulary, 16 tokens per query as in the real OWLv2.
    """
    import torch
    from transformers import (
        CLIPTokenizer,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab.write_clip_bpe(out)
    # OWL pads every query to 16 tokens with "!" (id 0), like google/owlv2-base-patch16.
    tokenizer = CLIPTokenizer.from_pretrained(str(out), pad_token="!", model_max_length=16)
    image_processor = Owlv2ImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)

    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 16,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE_SIZE,
        "patch_size": 8,
    }
    config = Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)
    torch.manual_seed(0)
    model = Owlv2ForObjectDetection(config).eval()
    model.save_pretrained(out)
