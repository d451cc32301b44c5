"""Sentence embeddings through transformers: an encoder, mean pooling, unit vectors.

Serves the ``text_embedder`` role (text side only): any encoder ``AutoModel`` loads (BERT,
MiniLM, MPNet, ...) with its ``AutoTokenizer``, e.g. ``hf:sentence-transformers/all-MiniLM-L6-v2``
or a local copy of it. It computes what sentence-transformers computes for such a checkpoint:
the token states of the last layer averaged over the attention mask (or the ``[CLS]`` state
when the checkpoint's ``1_Pooling/config.json`` asks for it), then L2-normalised.

Imported lazily by the registry (``text_embedder`` role, ``hf:`` scheme).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from factcap.backends.hf_common import HFModel

POOLINGS = ("mean", "cls")


def _checkpoint_json(location: str, filename: str) -> dict[str, Any] | None:
    """A sentence-transformers side file of the checkpoint (local, or in the hub cache)."""
    local = Path(location).expanduser()
    path: Path | None = local / filename if local.is_dir() else None
    if path is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(location, filename)
            path = Path(found) if isinstance(found, str) else None
        except Exception:  # not a hub id: there is no side file to read
            path = None
    if path is None or not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of ``states`` ``(batch, tokens, dim)`` over the tokens where ``mask`` is 1.

    >>> mean_pool(torch.tensor([[[1.0], [3.0], [9.0]]]), torch.tensor([[1, 1, 0]]))
    tensor([[2.]])
    """
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class SentenceEmbedder(HFModel):
    """Unit sentence embeddings, one forward pass per batch.

    Options: ``max_length`` — tokens per text, special tokens included (default: the
    checkpoint's ``sentence_bert_config.json`` ``max_seq_length``, else the smaller of the
    tokenizer's and the position embeddings' limits); longer texts are truncated to it, as
    sentence-transformers does — :meth:`count_tokens` tells which would be (metrics that must
    not truncate split their texts first); ``pooling`` — ``mean`` or ``cls`` (default: the
    checkpoint's pooling config, else ``mean``).

    >>> import tempfile, torch
    >>> from transformers import BertConfig, BertModel, BertTokenizer
    >>> from factcap.backends.tiny.vocab import write_wordpiece_vocab
    >>> d = tempfile.mkdtemp()
    >>> tok = BertTokenizer(str(write_wordpiece_vocab(d)))
    >>> _ = torch.manual_seed(0)
    >>> BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=64)).save_pretrained(d)
    >>> _ = tok.save_pretrained(d)
    >>> SentenceEmbedder(d).embed_texts(["a cat", "two dogs play"]).shape
    (2, 32)
    """

    model_class = "AutoModel"
    processor_class = "AutoTokenizer"

    def __init__(
        self,
        location: str,
        device: str | None = None,
        dtype: str | None = None,
        *,
        max_length: int | None = None,
        pooling: str | None = None,
    ):
        if pooling is not None and pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
        if max_length is not None and int(max_length) < 2:
            raise ValueError(f"max_length must be at least 2 tokens, got {max_length!r}")
        super().__init__(location, device=device, dtype=dtype)
        self.tokenizer = self.processor
        config = self.model.config
        self.dim = int(config.hidden_size)
        self.pooling = pooling or self._configured_pooling(location)
        self.max_text_tokens = int(max_length or self._configured_max_length(location))
        self.options = {"max_length": self.max_text_tokens, "pooling": self.pooling}

    @staticmethod
    def _configured_pooling(location: str) -> str:
        pooling = _checkpoint_json(location, "1_Pooling/config.json") or {}
        if pooling.get("pooling_mode_cls_token") and not pooling.get("pooling_mode_mean_tokens"):
            return "cls"
        return "mean"

    def _configured_max_length(self, location: str) -> int:
        st = _checkpoint_json(location, "sentence_bert_config.json") or {}
        if isinstance(st.get("max_seq_length"), int) and st["max_seq_length"] > 1:
            return int(st["max_seq_length"])
        limits = [int(self.tokenizer.model_max_length)]
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and positions > 0:
            limits.append(positions)
        return min(limits)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """How many tokens each text has, special tokens included (before truncation)."""
        ids = self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
        return [len(row) for row in ids]

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 unit rows, from one forward pass."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_text_tokens,
            return_tensors="pt",
        )
        batch = self.to_device(batch)
        with torch.inference_mode():
            states = self.model(**batch).last_hidden_state
        if self.pooling == "cls":
            pooled = states[:, 0]
        else:
            pooled = mean_pool(states, batch["attention_mask"])
        pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
        return pooled.cpu().numpy().astype(np.float32)
