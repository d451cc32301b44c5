"""A tiny Stable-Diffusion pipeline for the ``t2i`` role, built offline with random weights.

The real diffusers classes of SD / SD-Turbo (UNet2DConditionModel, AutoencoderKL, a CLIP text
encoder with CLIP's BPE tokenizer, an Euler scheduler with "trailing" timesteps as SD-Turbo
ships it), shrunk to width 32-64, saved with ``save_pretrained`` so that
``AutoPipelineForText2Image.from_pretrained`` loads it like a hub pipeline. It draws 64 px
images in one or a few steps; no safety checker or feature extractor is saved.
"""

from __future__ import annotations

from pathlib import Path

from factcap.backends.tiny import vocab

#: Output side in pixels: the UNet's 16 px latents times the VAE's 4x upsampling.
IMAGE_SIZE = 64
_LATENT_SIZE = 16
_TEXT_WIDTH = 32


def build_sd(out: Path) -> None:
    """A Stable-Diffusion pipeline: 2-block UNet (32/64 channels, cross-attention width 32),
    3-block VAE (4 latent channels, 4x), 2-layer CLIP text encoder (77-token context) and an
    EulerDiscreteScheduler with trailing timesteps (1-4 step "turbo" sampling).

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "sd"
    >>> build_sd(out)
    >>> (out / "model_index.json").is_file()
    True
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab_dir = out / "_vocab"
    vocab_dir.mkdir(exist_ok=True)
    vocab_path, merges_path = vocab.write_clip_bpe(vocab_dir)
    tokenizer = CLIPTokenizer(vocab=str(vocab_path), merges=str(merges_path), model_max_length=77)

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=_LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=_TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    torch.manual_seed(1)
    vae = AutoencoderKL(
        sample_size=IMAGE_SIZE,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
    )
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=_TEXT_WIDTH,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    # SD-Turbo's scheduler: Euler, SD's scaled-linear betas, timesteps from the end.
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        prediction_type="epsilon",
        timestep_spacing="trailing",
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    for path in vocab_dir.iterdir():
        path.unlink()
    vocab_dir.rmdir()
