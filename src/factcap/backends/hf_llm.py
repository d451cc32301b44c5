"""Chat language models through transformers: any causal LM whose tokenizer has a chat template.

Imported lazily by the registry (``llm`` role, ``hf:`` scheme).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from factcap.backends.hf_common import HFModel, decode_new_tokens, generation_kwargs
from factcap.backends.options import check_token_counts, take_options
from factcap.errors import ConfigError
from factcap.roles import ChatMessage


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
        json_schema: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """One reply per conversation, from a single batched ``generate`` call.

        ``json_schema`` is accepted for the :class:`~factcap.roles.LLM` protocol and
        ignored: generation is not constrained, the caller's tolerant parser reads the reply.
        """
        if not conversations:
            return []
        check_token_counts(type(self).__name__, max_new_tokens, self.options["min_new_tokens"])
        batch = self.encode(conversations)
        kwargs = generation_kwargs(
            max_new_tokens,
            self.options["min_new_tokens"],
            temperature,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        with torch.inference_mode():
            output = self.model.generate(**batch, **kwargs)
        return decode_new_tokens(self.tokenizer, output, batch["input_ids"].shape[1])
