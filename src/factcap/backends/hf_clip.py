"""CLIP-family joint image-text embeddings through transformers (CLIP, SigLIP, SigLIP 2).

Imported lazily by the registry (``embedder`` role, ``hf:`` scheme).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from factcap.backends.hf_common import HFModel
from factcap.backends.options import take_options

if TYPE_CHECKING:
    from PIL import Image

# SigLIP towers were trained on texts padded to the full context; CLIP pools at EOS.
_PAD_TO_MAX = ("siglip", "siglip2")


def _features(output: Any) -> torch.Tensor:
    """The projected embedding, whether ``get_*_features`` returns a tensor or a model output."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipEmbedder(HFModel):
    """Embeds images and texts into CLIP's joint space; rows are L2-normalised float32.

    Texts longer than :attr:`max_text_tokens` are truncated (the evaluate stage splits long
    captions itself). One forward pass per batch. No options.

    >>> from factcap.backends import registry
    >>> clip = registry.build("embedder", "tiny:clip")
    >>> clip.embed_texts(["a cat", "a dog"]).shape
    (2, 32)
    """

    model_class = "AutoModel"
    processor_class = "AutoProcessor"

    def __init__(
        self, location: str, device: str | None = None, dtype: str | None = None, **options: Any
    ):
        take_options(type(self).__name__, options, {})
        super().__init__(location, device=device, dtype=dtype)
        self.tokenizer = self.processor.tokenizer
        self.image_processor = self.processor.image_processor
        self._pad_to_max = self.model.config.model_type in _PAD_TO_MAX

    @property
    def max_text_tokens(self) -> int:
        """The text tower's context length in tokens, special tokens included."""
        context = self.model.config.text_config.max_position_embeddings
        tokenizer_max = getattr(self.tokenizer, "model_max_length", None) or context
        return int(min(context, tokenizer_max))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """How many tokens each text takes in the text tower, special tokens included, before
        any truncation (what the evaluate stage compares with :attr:`max_text_tokens`)."""
        if not texts:
            return []
        ids = self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
        return [len(row) for row in ids]

    @property
    def dim(self) -> int:
        """Width of the joint embedding space."""
        config = self.model.config
        return int(getattr(config, "projection_dim", None) or config.text_config.hidden_size)

    def _normalised(self, features: torch.Tensor) -> np.ndarray:
        features = features.float()
        features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return features.cpu().numpy().astype(np.float32, copy=False)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``(len(images), dim)`` unit rows."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        inputs = self.to_device(self.image_processor(images=list(images), return_tensors="pt"))
        with torch.inference_mode():
            return self._normalised(_features(self.model.get_image_features(**inputs)))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` unit rows; each text cut to :attr:`max_text_tokens` tokens."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        inputs = self.tokenizer(
            list(texts),
            padding="max_length" if self._pad_to_max else True,
            truncation=True,
            max_length=self.max_text_tokens,
            return_tensors="pt",
        )
        if self._pad_to_max:
            inputs.pop("attention_mask", None)  # SigLIP attends to its padding, as trained
        inputs = self.to_device(inputs)
        with torch.inference_mode():
            return self._normalised(_features(self.model.get_text_features(**inputs)))
