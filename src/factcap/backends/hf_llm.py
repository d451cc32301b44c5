"""Chat language models through transformers: any causal LM whose tokenizer has a chat template.

Imported lazily by the registry (``llm`` role, ``hf:`` scheme).
"""

from __future__ import annotations

import copy
import inspect
import threading
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from factcap.backends.hf_common import HFModel, decode_new_tokens, generation_kwargs
from factcap.backends.hf_vlm import common_prefix_length
from factcap.backends.options import check_token_counts, take_options
from factcap.errors import ConfigError
from factcap.roles import ChatMessage

#: A shared prefix shorter than this many tokens is not worth a separate prefill.
MIN_SHARED_TOKENS = 16
#: How many prefixes' key/value caches a model keeps (least recently used dropped first).
PREFIX_SLOTS = 8
#: How many recent prompts a lone prompt is compared with to find its shared prefix.
RECENT_PROMPTS = 16


def prefix_reuse_blocker(model: Any) -> str | None:
    """Why ``model`` cannot continue a cached prompt prefix with padding between that prefix
    and the rest of each prompt, or None when it can: every layer of its cache must be a
    plain attention layer (a key and value per position, looked at through the mask), not a
    sliding window (the window would count the padding) nor a recurrent or convolution state
    (which would run through the padding), and its generation config must not ask for a
    cache of its own kind.

    >>> from factcap.backends import registry
    >>> prefix_reuse_blocker(registry.build("llm", "tiny:llm").model) is None
    True
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    kind = getattr(model.config, "model_type", type(model).__name__)
    supports = getattr(model, "_supports_default_dynamic_cache", None)
    if supports is not None and not supports():
        return f"{kind}: keeps a cache of its own kind, not transformers' DynamicCache"
    wanted = getattr(getattr(model, "generation_config", None), "cache_implementation", None)
    if wanted:
        return f"{kind}: its generation config asks for a {wanted!r} cache"
    try:
        layers = DynamicCache(config=model.config.get_text_config(decoder=True)).layers
    except Exception as err:  # noqa: BLE001 - a config the cache cannot read: stay plain
        return f"{kind}: its cache layout cannot be read ({type(err).__name__})"
    other = sorted({type(layer).__name__ for layer in layers if type(layer) is not DynamicLayer})
    if other:
        return (
            f"{kind}: cache layers {', '.join(other)} (a sliding window or a recurrent / "
            "convolution state) would see the padding between the prefix and the rest"
        )
    return None


class CausalLM(HFModel):
    """A causal LM chatting through its tokenizer's chat template; one ``generate`` per batch.

    **Prefix reuse** (``reuse_prefix``, default true). The pipeline's prompts start alike:
    the chat template's header (a default system prompt, the user turn's opening) and the
    fixed instructions before the first inserted text (the claims and compose templates'
    first lines), often also the start of the quoted data. That shared token prefix is
    prefilled once, at batch size one, and its key/value cache is copied to every row; each
    row's remaining tokens follow it, left-padded *after* the prefix (positions continue at
    the prefix length, the mask hides the padding), so ``generate`` computes the same
    replies as the plain path. The shared prefix of a batch is its prompts' longest common
    token prefix; a lone prompt's is what it shares with the recent prompts. The caches of
    the last :data:`PREFIX_SLOTS` prefixes are kept, so a later batch of the same stage
    prefills only what goes past a kept one (its longest match, cut to fit). A shared prefix
    under :data:`MIN_SHARED_TOKENS` tokens takes the plain path, and so do models whose
    cache is not plain attention (:func:`prefix_reuse_blocker`; ``prefix_reuse_off`` says
    why), e.g. LFM2's convolution layers. ``reuse_prefix: false`` is the plain path
    everywhere: one left-padded batch, each prompt prefilled whole.

    Options: ``min_new_tokens`` (default 0) forces at least that many tokens per reply;
    ``reuse_prefix`` (true); ``quantize`` (``8bit`` / ``4bit``: bitsandbytes on a CUDA GPU,
    :mod:`factcap.backends.quantize`).

    >>> from factcap.backends import registry
    >>> llm = registry.build("llm", "tiny:llm", min_new_tokens=2)
    >>> replies = llm.chat([[{"role": "user", "content": "Name a fruit."}]], max_new_tokens=8)
    >>> len(replies), isinstance(replies[0], str)
    (1, True)
    """

    model_class = "AutoModelForCausalLM"
    processor_class = "AutoTokenizer"
    defaults: dict[str, Any] = {"min_new_tokens": 0, "reuse_prefix": True}

    def __init__(
        self, location: str, device: str | None = None, dtype: str | None = None, **options: Any
    ):
        owner = type(self).__name__
        opts = take_options(owner, options, {**self.defaults, "quantize": None})
        quantize = opts.pop("quantize")
        check_token_counts(owner, 1, opts["min_new_tokens"])
        if not isinstance(opts["reuse_prefix"], bool):
            raise ValueError(
                f"{owner}: reuse_prefix must be true or false, got {opts['reuse_prefix']!r}"
            )
        super().__init__(location, device=device, dtype=dtype, quantize=quantize)
        self.options = opts
        self.tokenizer = self.processor
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError(
                f"{location!r} has no chat template: use an instruction-tuned (chat) checkpoint"
            )
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        accepts = inspect.signature(self.model.forward).parameters
        # transformers >= 5.2x names the key/value cache ``cache`` (``past_key_values`` before)
        self._cache_arg = "cache" if "cache" in accepts else "past_key_values"
        self._keep_last = "logits_to_keep" in accepts
        self.reuse_prefix: bool = opts["reuse_prefix"]
        self.prefix_reuse_off: str | None = prefix_reuse_blocker(self.model)
        #: prompt tokens whose prefill prefix reuse saved, over this model's life
        self.prefix_tokens_saved = 0
        self._prefixes: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._recent: deque[tuple[int, ...]] = deque(maxlen=RECENT_PROMPTS)
        self._lock = threading.Lock()

    def forget_prefixes(self) -> None:
        """Drop the kept prefix caches and the recent prompts (frees their memory; the next
        lone prompt takes the plain path)."""
        with self._lock:
            self._prefixes.clear()
            self._recent.clear()

    def encode(self, conversations: Sequence[Sequence[ChatMessage]]) -> dict[str, torch.Tensor]:
        """The chat-templated, left-padded batch (ending in the assistant prompt), on device."""
        batch = self.tokenizer.apply_chat_template(
            [list(conv) for conv in conversations],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            padding=True,
            return_tensors="pt",
        )
        return self.to_device(batch)

    def prompt_ids(self, conversations: Sequence[Sequence[ChatMessage]]) -> list[list[int]]:
        """Each conversation's chat-templated token ids, unpadded (the rows of :meth:`encode`
        without its padding)."""
        batch = self.tokenizer.apply_chat_template(
            [list(conv) for conv in conversations],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
        )
        return [list(map(int, ids)) for ids in batch["input_ids"]]

    def chat(
        self,
        conversations: Sequence[Sequence[ChatMessage]],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        json_schema: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """One reply per conversation, from a single batched ``generate`` call (after one
        prefill of the shared prefix, when reused: see the class docstring).

        ``json_schema`` is accepted for the :class:`~factcap.roles.LLM` protocol and
        ignored: generation is not constrained, the caller's tolerant parser reads the reply.
        """
        if not conversations:
            return []
        check_token_counts(type(self).__name__, max_new_tokens, self.options["min_new_tokens"])
        kwargs = generation_kwargs(
            max_new_tokens,
            self.options["min_new_tokens"],
            temperature,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        batch = None
        if self.reuse_prefix and not self.prefix_reuse_off:
            prepared = self.prefixed_batch(self.prompt_ids(conversations))
            if prepared is not None:
                batch, cache = prepared
                kwargs[self._cache_arg] = cache
        if batch is None:
            batch = self.encode(conversations)
        with torch.inference_mode():
            output = self.model.generate(**batch, **kwargs)
        return decode_new_tokens(self.tokenizer, output, batch["input_ids"].shape[1])

    def shared_length(self, rows: Sequence[Sequence[int]]) -> int:
        """How many leading tokens to prefill once for ``rows`` (each keeps at least one
        token of its own): the batch's common prefix, or for a lone prompt the longest one
        it shares with a recent prompt; 0 under :data:`MIN_SHARED_TOKENS`."""
        limit = min(len(r) for r in rows) - 1
        if len(rows) > 1:
            length = common_prefix_length(rows, limit)
        else:
            with self._lock:
                recent = list(self._recent)
            length = max((common_prefix_length([rows[0], r], limit) for r in recent), default=0)
        return length if length >= MIN_SHARED_TOKENS else 0

    def prefixed_batch(
        self, rows: Sequence[Sequence[int]]
    ) -> tuple[dict[str, torch.Tensor], Any] | None:
        """``(generate inputs, key/value cache)`` for ``rows`` with their shared prefix
        prefilled once: ``input_ids`` are the prefix, then each row's padding, then its own
        tokens; the cache holds the prefix, repeated along the batch. None when there is no
        shared prefix worth it (:meth:`shared_length`)."""
        length = self.shared_length(rows)
        with self._lock:
            self._recent.extend(tuple(r) for r in rows)
        if not length:
            return None
        prefix = tuple(rows[0][:length])
        n = len(rows)
        with torch.inference_mode():
            cache, prefilled = self.prefix_cache(prefix)
            if n > 1:
                cache.batch_repeat_interleave(n)
        rests = [list(r[length:]) for r in rows]
        width = max(len(r) for r in rests)
        pad = int(self.tokenizer.pad_token_id)
        ids = [list(prefix) + [pad] * (width - len(r)) + r for r in rests]
        mask = [[1] * length + [0] * (width - len(r)) + [1] * len(r) for r in rests]
        with self._lock:
            self.prefix_tokens_saved += n * length - prefilled
        batch = {
            "input_ids": torch.tensor(ids, device=self.device),
            "attention_mask": torch.tensor(mask, device=self.device),
        }
        return batch, cache

    def prefix_cache(self, prefix: tuple[int, ...]) -> tuple[Any, int]:
        """A fresh copy (the caller's to extend) of the key/value cache of ``prefix`` at batch
        size one, and how many tokens were prefilled for it: from the kept prefix that
        matches it longest (cut to the match), only the tokens past that are run; the result
        is kept for later calls."""
        with self._lock:
            best, match = None, 0
            for key in self._prefixes:
                m = common_prefix_length([key, prefix])
                if m > match:
                    best, match = key, m
            if best is not None:
                self._prefixes.move_to_end(best)
                cache = copy.deepcopy(self._prefixes[best])
        if best is not None and match == len(prefix) == len(best):
            return cache, 0
        if best is not None and match < len(best):
            cache.crop(match - len(best))  # negative: drop that many tokens from the end
        if match < len(prefix):
            cache = self._prefill(prefix, match, cache if best is not None else None)
        with self._lock:
            self._prefixes[prefix] = cache
            self._prefixes.move_to_end(prefix)
            while len(self._prefixes) > PREFIX_SLOTS:
                self._prefixes.popitem(last=False)
        return copy.deepcopy(cache), len(prefix) - match

    def _prefill(self, ids: Sequence[int], start: int, cache: Any) -> Any:
        """The cache of ``ids`` after running ``ids[start:]`` on ``cache`` (holding
        ``ids[:start]``, or None when ``start`` is 0)."""
        tokens = torch.tensor([list(ids[start:])], device=self.device)
        out = self.model(
            input_ids=tokens,
            attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=self.device),
            position_ids=torch.arange(start, len(ids), device=self.device)[None, :],
            use_cache=True,
            **({self._cache_arg: cache} if cache is not None else {}),
            **({"logits_to_keep": 1} if self._keep_last else {}),
        )
        return getattr(out, self._cache_arg)
