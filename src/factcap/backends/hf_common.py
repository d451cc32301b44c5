"""What every transformers backend shares: device/dtype resolution, safe loading, the
``generate`` arguments and decoding of the generators, and the yes/no renormalisation of the
judges (:class:`YesNoVQA`).

Imported only when a ``hf:`` model is built, so ``import factcap`` stays light.
Device and dtype are decided once, here, when the model is built; backends never move
tensors between devices behind the user's back.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from factcap.backends.hardware import FlagReader, auto_dtype, cpu_bf16, cpu_flags, trim_heap
from factcap.errors import ConfigError, ModelNotAvailable, require
from factcap.roles import check_pairs

require("torch", "hf")
require("transformers", "hf")

import torch  # noqa: E402

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def _mps() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(device: str | None) -> torch.device:
    """``auto`` (or None) picks CUDA when present, then Apple MPS, then CPU. A device this
    torch cannot use is a :class:`~factcap.errors.ConfigError` saying so, in one line."""
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps() else "cpu")
    chosen = torch.device(device)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r}: this torch ({torch.__version__}) has no usable CUDA device; "
            "use --device cpu (or auto), or install a CUDA build of torch"
        )
    if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
        raise ConfigError(
            f"device {device!r}: there are {torch.cuda.device_count()} CUDA device(s)"
        )
    if chosen.type == "mps" and not _mps():
        raise ConfigError(f"device {device!r}: Apple MPS is not available here; use cpu")
    return chosen


def resolve_dtype(
    dtype: str | None, device: torch.device, read_flags: FlagReader = cpu_flags
) -> torch.dtype:
    """``auto`` (or None) is float16 on CUDA, bfloat16 on a CPU with native bf16 instructions
    (``read_flags`` returns the CPU's flags; :mod:`factcap.backends.hardware`), float32
    elsewhere. The first time ``auto`` picks bfloat16 on a CPU, a log line says so."""
    if dtype in (None, "", "auto"):
        chosen = _DTYPES[auto_dtype(device.type, read_flags)]
        if device.type == "cpu" and chosen == torch.bfloat16:
            _say_auto_bf16(cpu_bf16(read_flags)[1])
        return chosen
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(_DTYPES)}") from None


@cache
def _say_auto_bf16(why: str) -> None:
    log.warning(
        "factcap: dtype auto is bfloat16 here: %s (half the memory, about twice as fast); "
        "dtype: float32 for full precision",
        why,
    )


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


@cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (``HF_ENDPOINT``) answers a TCP connection at all; checked
    once, so a machine without it learns that in seconds, not after the retries."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def _in_hub_cache(location: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(location, "config.json")
    except Exception:  # noqa: BLE001 - not a valid hub id: from_pretrained will say so
        return True
    return isinstance(found, str)


def load_pretrained(loader: Any, location: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(location, **kwargs)`` with a clear error when it is missing.

    A hub id that is neither on disk nor in the cache, on a machine that cannot reach the hub,
    fails at once (instead of after the download retries)."""
    local = Path(location).expanduser().exists()
    offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")
    if not local and not offline and not _in_hub_cache(location) and not hub_reachable():
        raise ModelNotAvailable(
            not_available_message(location) + " (the hub is not reachable from here)"
        )
    try:
        return loader.from_pretrained(location, **kwargs)
    except (OSError, ValueError) as err:
        text = str(err)
        missing = isinstance(err, OSError) or "does not appear to have" in text or "offline" in text
        if missing:
            raise ModelNotAvailable(not_available_message(location, err)) from err
        raise


#: Set while a checkpoint loads with a cast: transformers then reads its safetensors files
#: (``pread``) instead of mapping them (see :func:`load_weights`).
_READ_NOT_MAP: contextvars.ContextVar[bool] = contextvars.ContextVar("read_not_map", default=False)


@cache
def _install_read_switch() -> bool:
    """Wrap the ``safe_open`` that transformers' loader calls so that, while
    :data:`_READ_NOT_MAP` is set, a CPU ``mmap`` open becomes a ``pread`` one. Other loads
    are untouched. False where this transformers or safetensors has no such switch."""
    try:
        from transformers import modeling_utils
    except ImportError:  # pragma: no cover - transformers is required here
        return False
    original = getattr(modeling_utils, "safe_open", None)
    if original is None:
        return False

    def safe_open(filename: Any, framework: str = "pt", device: Any = "cpu", **kwargs: Any) -> Any:
        if _READ_NOT_MAP.get() and str(device) == "cpu" and kwargs.get("backend") == "mmap":
            try:
                return original(filename, framework=framework, device=device, backend="pread")
            except TypeError:  # a safetensors without the pread backend
                pass
        return original(filename, framework=framework, device=device, **kwargs)

    modeling_utils.safe_open = safe_open
    return True


@contextmanager
def reading_not_mapping() -> Iterator[bool]:
    """Within: safetensors checkpoints are read tensor by tensor (``pread``), not mapped.

    Why: transformers maps a checkpoint and casts each tensor from the mapping; every page
    it touched stays mapped until the whole model is loaded, so loading a float32
    checkpoint as bfloat16 held the float32 file too (Qwen2.5-1.5B: 9.05 GB peak RSS for
    2.9 GB of bf16 weights; read instead, 3.44 GB). The tensors are read one at a time, so
    at most one is held in float32 before its cast. Yields whether the switch is in place.
    """
    installed = _install_read_switch()
    token = _READ_NOT_MAP.set(True)
    # one tensor at a time: transformers' loader otherwise reads several at once in threads,
    # each in float32 before its cast (Qwen2.5-7B's two 2.2 GB embedding matrices together)
    previous = os.environ.get("HF_DEACTIVATE_ASYNC_LOAD")
    os.environ["HF_DEACTIVATE_ASYNC_LOAD"] = "1"
    try:
        yield installed
    finally:
        _READ_NOT_MAP.reset(token)
        if previous is None:
            os.environ.pop("HF_DEACTIVATE_ASYNC_LOAD", None)
        else:
            os.environ["HF_DEACTIVATE_ASYNC_LOAD"] = previous


def load_weights(loader: Any, location: str, dtype: torch.dtype, **kwargs: Any) -> Any:
    """``load_pretrained(loader, location, dtype=dtype)``, reading the checkpoint rather than
    mapping it when its weights are stored in another dtype (a cast): then only the cast
    copy stays in memory. Same dtype: mapped as transformers does (no copy at all)."""
    from factcap.backends.footprint import checkpoint_folder, stored_dtypes

    folder = checkpoint_folder(location)
    stored = stored_dtypes(folder) if folder is not None else set()
    target = str(dtype).removeprefix("torch.")
    if stored and stored != {target}:
        with reading_not_mapping():
            model = load_pretrained(loader, location, dtype=dtype, **kwargs)
        trim_heap()  # the tensors read before their cast were freed: give their pages back
        return model
    return load_pretrained(loader, location, dtype=dtype, **kwargs)


def generation_kwargs(
    max_new_tokens: int,
    min_new_tokens: int = 0,
    temperature: float = 0.0,
    *,
    pad_token_id: int | None = None,
    num_beams: int = 1,
) -> dict[str, Any]:
    """``generate`` arguments: greedy (or beam search) when ``temperature`` is 0, else sampling
    at it. ``min_new_tokens`` is capped by ``max_new_tokens``; a ``pad_token_id`` of None leaves
    the model's generation config to decide.

    >>> generation_kwargs(8, 20, pad_token_id=0)["min_new_tokens"]
    8
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "min_new_tokens": min(min_new_tokens, max_new_tokens),
        "num_beams": num_beams,
    }
    if pad_token_id is not None:
        kwargs["pad_token_id"] = pad_token_id
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=float(temperature))
    else:
        # Chat checkpoints often ship sampling defaults; greedy decoding must not inherit them.
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


def decode_new_tokens(tokenizer: Any, output_ids: torch.Tensor, prompt_length: int) -> list[str]:
    """Decode what ``generate`` added after the (left-padded) prompt, without special tokens."""
    texts = tokenizer.batch_decode(output_ids[:, prompt_length:], skip_special_tokens=True)
    return [text.strip() for text in texts]


def yes_probabilities(
    logits: torch.Tensor, yes_ids: Sequence[int], no_ids: Sequence[int]
) -> list[float]:
    """P(yes) / (P(yes) + P(no)) per row of answer-position ``logits`` (batch, vocab), where
    P(yes) sums the probabilities of the ``yes_ids`` tokens and P(no) of the ``no_ids``.

    Computed as sigmoid(log sum P(yes) - log sum P(no)): the softmax normaliser cancels.

    >>> yes_probabilities(torch.tensor([[0.0, 0.0, 5.0]]), [0], [1])
    [0.5]
    """
    logits = logits.float()
    margin = torch.logsumexp(logits[:, list(yes_ids)], -1) - torch.logsumexp(
        logits[:, list(no_ids)], -1
    )
    return torch.sigmoid(margin).tolist()


class HFModel:
    """Base of the transformers backends: loads ``model`` + ``processor`` once, on one device.

    Subclasses set ``model_class`` / ``processor_class`` (names in ``transformers``) and
    implement their role's method.
    """

    model_class: str = "AutoModel"
    processor_class: str = "AutoProcessor"

    def __init__(
        self,
        location: str,
        device: str | None = None,
        dtype: str | None = None,
        quantize: str | None = None,
        **options: Any,
    ):
        import transformers

        self.name = f"hf:{location}"
        self.location = location
        self.options = options
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.quantize = quantize
        loader = getattr(transformers, self.model_class)
        if quantize is not None:  # refused before anything loads where it cannot work
            from factcap.backends import quantize as bnb

            bnb.check_value(self.name, quantize)
            bnb.refuse_without_cuda(
                self.name, quantize, str(self.device), torch.cuda.is_available()
            )
            bnb.require_bitsandbytes()
            if self.dtype == torch.float32:
                self.dtype = torch.float16  # what the quantised layers compute in
        self.processor = load_pretrained(getattr(transformers, self.processor_class), location)
        if quantize is not None:
            self.model = load_pretrained(
                loader,
                location,
                dtype=self.dtype,
                quantization_config=bnb.bnb_config(quantize, self.dtype),
                device_map={"": self.device},
            ).eval()  # placed by device_map: a quantised model is not moved
        else:
            self.model = load_weights(loader, location, self.dtype)
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


class YesNoVQA:
    """The VQA role for a model whose answer position gives logits over its vocabulary.

    A subclass sets ``yes_ids`` / ``no_ids`` (the first tokens of its spellings of the two
    answers) and implements :meth:`answer_logits`; :meth:`yes_probability` checks the batch
    and renormalises with :func:`yes_probabilities`.
    """

    yes_ids: list[int]
    no_ids: list[int]

    def answer_logits(
        self, images: Sequence[Image.Image], questions: Sequence[str]
    ) -> torch.Tensor:
        """``(len(images), vocab)`` logits of the first answer token, from one forward pass."""
        raise NotImplementedError

    def yes_probability(
        self, images: Sequence[Image.Image], questions: Sequence[str]
    ) -> list[float]:
        """P(yes) / (P(yes) + P(no)) for each (image, question) pair."""
        check_pairs(images, questions)
        if not images:
            return []
        return yes_probabilities(self.answer_logits(images, questions), self.yes_ids, self.no_ids)
