"""Chat language models through transformers: any causal LM whose tokenizer has a chat template.

Imported lazily by the registry (``llm`` role, ``hf:`` scheme).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from factcap.backends.hf_common import HFModel
from factcap.backends.roles import ChatMessage
from factcap.errors import ConfigError


def take_options(owner: str, given: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict:
    """``defaults`` updated with ``given``; an option name not in ``defaults`` is a TypeError.

    >>> take_options("X", {"a": 2}, {"a": 1, "b": 0})
    {'a': 2, 'b': 0}
    """
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise TypeError(
            f"{owner} got unknown option(s) {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(sorted(defaults)) or 'none'}"
        )
    return {**defaults, **given}


def check_token_counts(owner: str, max_new_tokens: int, min_new_tokens: int) -> None:
    """Raise ValueError unless ``0 <= min_new_tokens`` and ``1 <= max_new_tokens``."""
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"{owner}: max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if not isinstance(min_new_tokens, int) or min_new_tokens < 0:
        raise ValueError(f"{owner}: min_new_tokens must be an integer >= 0, got {min_new_tokens!r}")


def generation_kwargs(
    pad_token_id: int | None, max_new_tokens: int, min_new_tokens: int, temperature: float = 0.0
) -> dict[str, Any]:
    """``generate`` arguments: greedy when ``temperature`` is 0, else sampling at it.

    ``min_new_tokens`` is capped by ``max_new_tokens``.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "min_new_tokens": min(min_new_tokens, max_new_tokens),
        "pad_token_id": pad_token_id,
    }
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


class CausalLM(HFModel):
    """A causal LM chatting through its tokenizer's chat template; one ``generate`` per batch.

    Options: ``min_new_tokens`` (default 0) forces at least that many tokens per reply.

    >>> from factcap.backends import registry
    >>> llm = registry.build("llm", "tiny:llm", min_new_tokens=2)
    >>> replies = llm.chat([[{"role": "user", "content": "Name a fruit."}]], max_new_tokens=8)
    >>> len(replies), isinstance(replies[0], str)
    (1, True)
    """

    model_class = "AutoModelForCausalLM"
    processor_class = "AutoTokenizer"
    defaults: dict[str, Any] = {"min_new_tokens": 0}

    def __init__(
        self, location: str, device: str | None = None, dtype: str | None = None, **options: Any
    ):
        opts = take_options(type(self).__name__, options, self.defaults)
        check_token_counts(type(self).__name__, 1, opts["min_new_tokens"])
        super().__init__(location, device=device, dtype=dtype)
        self.options = opts
        self.tokenizer = self.processor
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError(
                f"{location!r} has no chat template: use an instruction-tuned (chat) checkpoint"
            )
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

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

    def chat(
        self,
        conversations: Sequence[Sequence[ChatMessage]],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
    ) -> list[str]:
        """One reply per conversation, from a single batched ``generate`` call."""
        if not conversations:
            return []
        check_token_counts(type(self).__name__, max_new_tokens, self.options["min_new_tokens"])
        batch = self.encode(conversations)
        kwargs = generation_kwargs(
            self.tokenizer.pad_token_id,
            max_new_tokens,
            self.options["min_new_tokens"],
            temperature,
        )
        with torch.inference_mode():
            output = self.model.generate(**batch, **kwargs)
        return decode_new_tokens(self.tokenizer, output, batch["input_ids"].shape[1])
