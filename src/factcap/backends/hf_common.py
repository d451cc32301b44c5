"""What every transformers backend shares: device/dtype resolution and safe loading.

Imported only when a ``hf:`` model is built, so ``import factcap`` stays light.
Device and dtype are decided once, here, when the model is built; backends never move
tensors between devices behind the user's back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from factcap.errors import ModelNotAvailable, require

require("torch", "hf")
require("transformers", "hf")

import torch  # noqa: E402

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_device(device: str | None) -> torch.device:
    """``auto`` (or None) picks CUDA when present, then Apple MPS, then CPU."""
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """``auto`` is float16 on CUDA and float32 elsewhere (CPU half precision is slow)."""
    if dtype in (None, "", "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(_DTYPES)}") from None


def not_available_message(location: str, err: Exception | None = None) -> str:
    """One line: which model, where we looked, how to point at a local copy."""
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")
    where = "not a local directory"
    if Path(location).expanduser().exists():
        where = "a local path, but not a complete checkpoint"
    reason = f" ({type(err).__name__})" if err else ""
    return (
        f"model {location!r} is not available{reason}: it is {where}, not in the Hugging Face "
        f"cache ({cache}){', and HF_HUB_OFFLINE=1 forbids downloading' if offline else ''}. "
        f"Download it where the hub is reachable (hf download {location}) or point the "
        f"config at a local copy: hf:/path/to/{Path(location).name or 'model'}"
    )


def load_pretrained(loader: Any, location: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(location, **kwargs)`` with a clear error when it is missing."""
    try:
        return loader.from_pretrained(location, **kwargs)
    except (OSError, ValueError) as err:
        text = str(err)
        missing = isinstance(err, OSError) or "does not appear to have" in text or "offline" in text
        if missing:
            raise ModelNotAvailable(not_available_message(location, err)) from err
        raise


class HFModel:
    """Base of the transformers backends: loads ``model`` + ``processor`` once, on one device.

    Subclasses set ``model_class`` / ``processor_class`` (names in ``transformers``) and
    implement their role's method.
    """

    model_class: str = "AutoModel"
    processor_class: str = "AutoProcessor"

    def __init__(
        self, location: str, device: str | None = None, dtype: str | None = None, **options: Any
    ):
        import transformers

        self.name = f"hf:{location}"
        self.location = location
        self.options = options
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.processor = load_pretrained(getattr(transformers, self.processor_class), location)
        self.model = load_pretrained(
            getattr(transformers, self.model_class), location, dtype=self.dtype
        )
        self.model.to(self.device).eval()

    def to_device(self, batch: Any) -> Any:
        """Move a processor output to the model's device, casting floats to its dtype."""
        moved = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(self.dtype)
            moved[key] = value
        return moved
