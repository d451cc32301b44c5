"""Quantised weights: the ``quantize`` option (``8bit`` or ``4bit``) of the LLM and of chat
VLMs loads them through bitsandbytes (transformers' ``BitsAndBytesConfig``) on a CUDA GPU::

    llm: {model: hf:Qwen/Qwen2.5-7B-Instruct, options: {quantize: 4bit}}

bitsandbytes' 8- and 4-bit kernels run on CUDA only, so a job that asks for them on a
machine (or a device) without CUDA is refused in one line before any model loads
(:func:`check_quantize`, called by the caption job and by ``HFModel``). On a CPU, use
``dtype: bfloat16`` and ``--memory low`` instead: dynamic int8 (``torch.ao``'s
``quantize_dynamic`` of the LLM's linear layers) was measured and not adopted: it held more
memory than bfloat16, made the shapes world's captions hallucinate, and ``torch.ao.quantization``
is deprecated; the figures are in README: "Memory: what a job needs, and how to make it fit".

>>> check_value("llm", "4bit")
>>> check_value("llm", "int4")
Traceback (most recent call last):
factcap.errors.ConfigError: llm: quantize must be 8bit or 4bit (bitsandbytes, on a CUDA GPU), not 'int4'
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import Any

from factcap.errors import ConfigError, MissingDependency

QUANTIZE = ("8bit", "4bit")
#: Roles whose backends take ``quantize`` (the LLM; chat VLMs as captioner, VQA or judge).
ROLES = ("llm", "captioner", "vqa", "judge")


def check_value(slot: str, value: Any) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a known quantisation."""
    if value not in QUANTIZE:
        raise ConfigError(
            f"{slot}: quantize must be {' or '.join(QUANTIZE)} (bitsandbytes, on a CUDA GPU), "
            f"not {value!r}"
        )


def refuse_without_cuda(slot: str, value: str, device: str, cuda: bool) -> None:
    """Raise the one-line :class:`ConfigError` when ``slot`` would not run on CUDA."""
    if device.startswith("cuda") and cuda:
        return
    where = (
        "this machine has no CUDA GPU" if not cuda else f"its device is {device!r}, not a CUDA GPU"
    )
    raise ConfigError(
        f"{slot}: quantize: {value} loads through bitsandbytes on a CUDA GPU, and {where}; "
        "remove it (on a CPU, dtype: bfloat16 halves the weights, --memory low loads one "
        "model at a time)"
    )


def require_bitsandbytes() -> None:
    """Raise :class:`MissingDependency` when bitsandbytes is not installed."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise MissingDependency(
            "quantize: 8bit/4bit needs the 'bitsandbytes' package: pip install bitsandbytes"
        )


def check_quantize(config: Any, slot_names: Iterable[str], cuda: bool | None = None) -> None:
    """Refuse, before anything loads, a ``quantize`` option that cannot work: an unknown
    value, a role that does not take it, a device without CUDA (``cuda``: whether one
    exists; None: ask torch, only when some slot asks for quantisation), or no bitsandbytes."""
    rcs = config.model_slots()
    for name in slot_names:
        rc = rcs[name]
        value = rc.options.get("quantize")
        if value is None:
            continue
        check_value(name, value)
        role = name.partition(":")[0]
        if role not in ROLES or not rc.model.startswith(("hf:", "tiny:", "bundled:")):
            raise ConfigError(
                f"{name}: quantize is for local (hf:) LLMs and chat VLMs, not {rc.model}"
            )
        if cuda is None:
            from factcap.backends.hardware import cuda_memory

            cuda = bool(cuda_memory())
        device = rc.device or config.device
        refuse_without_cuda(name, value, "cuda" if device == "auto" else device, cuda)
        require_bitsandbytes()


def bnb_config(value: str, compute_dtype: Any) -> Any:
    """transformers' ``BitsAndBytesConfig`` for ``value`` (4-bit: NF4, computing in
    ``compute_dtype``)."""
    from transformers import BitsAndBytesConfig

    if value == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype
    )
