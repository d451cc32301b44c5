"""Chat vision-language models through transformers (LLaVA, Qwen2.5-VL, SmolVLM, ...).

Any checkpoint that ``AutoModelForImageTextToText`` and ``AutoProcessor`` load, whose processor
has a chat template taking ``{"type": "image"}`` / ``{"type": "text"}`` content parts, serves
as a captioner (:class:`ChatVLMCaptioner`), as the yes/no VQA model (:class:`ChatVLMVQA`) and as
a grader with token probabilities (:class:`ChatVLMGrader`).
Imported lazily by the registry.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from factcap.backends.hf_common import HFModel, YesNoVQA, decode_new_tokens, generation_kwargs
from factcap.backends.options import check_int, check_text, check_token_counts, take_options
from factcap.errors import ConfigError
from factcap.roles import (
    DEFAULT_CAPTION_PROMPT,
    JUDGE_INSTRUCTION,
    Generation,
    TokenLogprobs,
    check_pairs,
    judge_prompt,
)

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

# Model types whose questions always take the plain path, and why: reusing a prefix's
# key/value cache needs a causal decoder with ordinary 1D positions (the suffix continuing at
# prefix length) that takes the image only through the prefix's tokens.
_MROPE = "3D (multimodal rotary) positions, which continuing a cached prefix does not rebuild"
PLAIN_PATH_MODELS: dict[str, str] = {
    **dict.fromkeys(
        (
            "qwen2_vl",
            "qwen2_5_vl",
            "qwen2_5_omni",
            "qwen3_vl",
            "qwen3_vl_moe",
            "qwen3_omni_moe",
            "glm4v",
            "glm4v_moe",
            "glm46v",
            "ernie4_5_vl_moe",
            "paddleocr_vl",
        ),
        _MROPE,
    ),
    "paligemma": "a bidirectional (prefix-LM) prompt: a question changes the prefix's states",
    "mllama": "the image enters through cross-attention with a per-token mask",
}

YES_SPELLINGS = ("yes", "Yes", "YES", " yes", " Yes", " YES")
NO_SPELLINGS = ("no", "No", "NO", " no", " No", " NO")


def image_messages(image: Image.Image, prompt: str) -> list[dict[str, Any]]:
    """One user turn holding the image, then the prompt.

    >>> image_messages(None, "Describe.")[0]["content"][1]
    {'type': 'text', 'text': 'Describe.'}
    """
    return [
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": prompt}],
        }
    ]


def first_token_ids(tokenizer: Any, spellings: Sequence[str]) -> set[int]:
    """The first token id of each spelling (a word's probability is carried by its first token)."""
    ids = set()
    for spelling in spellings:
        encoded = tokenizer.encode(spelling, add_special_tokens=False)
        if encoded:
            ids.add(int(encoded[0]))
    return ids


def prefix_reuse_blocker(model: Any, processor: Any) -> str | None:
    """Why ``model`` cannot reuse a prompt prefix's key/value cache, or None when it can: its
    ``model_type`` in :data:`PLAIN_PATH_MODELS`, a ``get_rope_index`` (3D positions of a
    model not in the table), no image placeholder token in the processor.

    >>> from types import SimpleNamespace as NS
    >>> prefix_reuse_blocker(NS(config=NS(model_type="qwen2_vl")), NS(image_token="<image>"))[:12]
    'qwen2_vl: 3D'
    >>> prefix_reuse_blocker(NS(config=NS(model_type="llava")), NS(image_token="<image>"))
    """
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind in PLAIN_PATH_MODELS:
        return f"{kind}: {PLAIN_PATH_MODELS[kind]}"
    if any(hasattr(m, "get_rope_index") for m in (model, getattr(model, "model", None))):
        return f"{kind}: {_MROPE}"
    if not getattr(processor, "image_token", None):
        return f"{kind}: its processor names no image placeholder token"
    return None


def image_groups(images: Sequence[object]) -> list[list[int]]:
    """The indices of ``images`` grouped by image (the same object), in order of first use.

    >>> a, b = object(), object()
    >>> image_groups([a, b, a, a])
    [[0, 2, 3], [1]]
    """
    groups: dict[int, list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(id(image), []).append(i)
    return list(groups.values())


def common_prefix_length(rows: Sequence[Sequence[int]], limit: int | None = None) -> int:
    """How many leading items all ``rows`` share (at most ``limit``).

    >>> common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]), common_prefix_length([[5], [5]], 0)
    (2, 0)
    """
    n = min(len(r) for r in rows) if rows else 0
    if limit is not None:
        n = min(n, limit)
    for i in range(n):
        if any(r[i] != rows[0][i] for r in rows):
            return i
    return n


class _ChatVLM(HFModel):
    """Shared loading and input building: chat-templated, left-padded image+prompt batches."""

    model_class = "AutoModelForImageTextToText"
    processor_class = "AutoProcessor"
    defaults: dict[str, Any] = {}

    def __init__(
        self, location: str, device: str | None = None, dtype: str | None = None, **options: Any
    ):
        opts = take_options(type(self).__name__, options, {**self.defaults, "quantize": None})
        quantize = opts.pop("quantize")
        self._check(opts)
        super().__init__(location, device=device, dtype=dtype, quantize=quantize)
        self.options = opts
        if not getattr(self.processor, "chat_template", None):
            raise ConfigError(
                f"{location!r} has no chat template: use an instruction-tuned (chat) VLM"
            )
        self.tokenizer = self.processor.tokenizer
        # Decoder-only generation reads the last positions: real tokens must sit on the right.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def _check(self, options: dict[str, Any]) -> None:
        """Validate option values before any weights are loaded."""

    def encode(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> dict[str, Any]:
        """The processor's batch for ``images[i]`` asked ``prompts[i]``, ready to generate from."""
        check_pairs(images, prompts)
        conversations = [image_messages(im, p) for im, p in zip(images, prompts, strict=True)]
        batch = self.processor.apply_chat_template(
            conversations,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True},
        )
        return self.to_device(batch)


class ChatVLMCaptioner(_ChatVLM):
    """Captions images with a chat VLM: the image and a prompt in one user turn, one batched
    ``generate`` call, only the new tokens decoded.

    Options: ``max_new_tokens`` (128), ``min_new_tokens`` (0), ``prompt``
    ("Describe this image in detail.").

    >>> from factcap.backends import registry
    >>> from PIL import Image
    >>> from factcap.examples import example_paths
    >>> images = [Image.open(p).convert("RGB") for p in example_paths()[:2]]
    >>> captioner = registry.build("captioner", "tiny:chat_vlm", min_new_tokens=4)
    >>> len(captioner.caption(images))
    2
    """

    #: ``caption(images, prompt=...)`` asks this prompt instead of the configured one.
    accepts_prompt = True
    defaults: dict[str, Any] = {
        "max_new_tokens": 128,
        "min_new_tokens": 0,
        "prompt": DEFAULT_CAPTION_PROMPT,
    }

    def _check(self, options: dict[str, Any]) -> None:
        owner = type(self).__name__
        check_token_counts(owner, options["max_new_tokens"], options["min_new_tokens"])
        check_text(owner, "prompt", options["prompt"], nonempty=True)

    def caption(self, images: Sequence[Image.Image], prompt: str | None = None) -> list[str]:
        """One caption per image; ``prompt`` overrides the configured one for this batch."""
        if not images:
            return []
        batch = self.encode(images, [prompt or self.options["prompt"]] * len(images))
        kwargs = generation_kwargs(
            self.options["max_new_tokens"],
            self.options["min_new_tokens"],
            pad_token_id=self.tokenizer.pad_token_id,
        )
        with torch.inference_mode():
            output = self.model.generate(**batch, **kwargs)
        return decode_new_tokens(self.tokenizer, output, batch["input_ids"].shape[1])


class ChatVLMVQA(YesNoVQA, _ChatVLM):
    """A chat VLM as the VQA role, asked yes or no: P(yes) at the first answer position.

    Each question is asked as "<question> Answer yes or no." after the image; at the first
    answer position, P(yes) and P(no) each sum the probabilities of the first tokens of their
    common spellings ("yes", "Yes", " yes", ...), and the result is P(yes) / (P(yes) + P(no)).

    **Prefix reuse** (``reuse_prefix``, default true). Questions about one image (the same
    object) share everything up to and past the image: the chat header, the image's tokens,
    often the question's first words. That common token prefix is run once, with the pixels,
    and its key/value cache serves every question, whose remaining tokens run as one batch on
    top of it (:meth:`shared_prefix_logits`); an image asked one question goes with the other
    such images into one plain batched pass. P(yes) equals the plain path's within float
    rounding. Models whose positions or attention are not a plain causal sequence (Qwen2-VL's
    3D positions, PaliGemma's bidirectional prefix, Mllama's cross-attention: the
    :data:`PLAIN_PATH_MODELS` table) always take the plain path; ``prefix_reuse_off`` says why.
    ``reuse_prefix: false`` is the plain path everywhere: one batched pass over every
    (image, question) pair, the image encoded once per pair.

    Options: ``instruction`` (the sentence appended to every question), ``reuse_prefix``.

    >>> from factcap.backends import registry
    >>> from PIL import Image
    >>> from factcap.examples import example_paths
    >>> image = Image.open(example_paths()[0]).convert("RGB")
    >>> judge = registry.build("vqa", "tiny:chat_vlm")
    >>> [p] = judge.yes_probability([image], ["Is there a cat?"])
    >>> 0.0 < p < 1.0
    True
    >>> two = judge.yes_probability([image, image], ["Is there a cat?", "Is it red?"])
    >>> abs(two[0] - p) < 1e-4
    True
    """

    defaults: dict[str, Any] = {"instruction": JUDGE_INSTRUCTION, "reuse_prefix": True}

    def __init__(
        self, location: str, device: str | None = None, dtype: str | None = None, **options: Any
    ):
        super().__init__(location, device=device, dtype=dtype, **options)
        yes = first_token_ids(self.tokenizer, YES_SPELLINGS)
        no = first_token_ids(self.tokenizer, NO_SPELLINGS)
        # A token that starts both words (e.g. a bare space) says nothing about the answer.
        shared = yes & no
        self.yes_ids, self.no_ids = sorted(yes - shared), sorted(no - shared)
        if not self.yes_ids or not self.no_ids:
            raise ConfigError(f"{location!r}: its tokenizer has no distinct 'yes'/'no' tokens")
        accepts = inspect.signature(self.model.forward).parameters
        self._keep_last = "logits_to_keep" in accepts
        # transformers >= 5.2x names the key/value cache ``cache`` (``past_key_values`` before)
        self._cache_arg = "cache" if "cache" in accepts else "past_key_values"
        self.reuse_prefix: bool = self.options["reuse_prefix"]
        self.prefix_reuse_off: str | None = prefix_reuse_blocker(self.model, self.processor)
        if self.reuse_prefix and self.prefix_reuse_off:
            log.info("%s: questions take the plain path (%s)", self.name, self.prefix_reuse_off)

    def _check(self, options: dict[str, Any]) -> None:
        owner = type(self).__name__
        check_text(owner, "instruction", options["instruction"])
        if not isinstance(options["reuse_prefix"], bool):
            raise ValueError(
                f"{owner}: reuse_prefix must be true or false, got {options['reuse_prefix']!r}"
            )

    @property
    def batch_by_image(self) -> bool:
        """With prefix reuse a call prefills each image once for all its questions, so callers
        put every question about an image into one call (:func:`factcap.roles.batches_by_image`)."""
        return self.reuse_prefix and self.prefix_reuse_off is None

    def question_prompt(self, question: str) -> str:
        """The text asked next to the image for ``question``."""
        return judge_prompt(question, self.options["instruction"])

    def answer_logits(
        self, images: Sequence[Image.Image], questions: Sequence[str]
    ) -> torch.Tensor:
        """The logits after the assistant prompt, for every question asked with its image:
        per image with a shared prefix when :attr:`reuse_prefix` allows, else (and for images
        asked once) from one plain batched pass."""
        if not self.reuse_prefix or self.prefix_reuse_off:
            return self.plain_logits(images, questions)
        rows: dict[int, torch.Tensor] = {}
        plain: list[int] = []
        for group in image_groups(images):
            logits = None
            if len(group) > 1:
                logits = self.shared_prefix_logits(images[group[0]], [questions[i] for i in group])
            if logits is None:  # asked once, or a prompt the prefix cannot be split from
                plain.extend(group)
                continue
            rows.update(zip(group, logits, strict=True))
        if plain:
            plain.sort()
            logits = self.plain_logits([images[i] for i in plain], [questions[i] for i in plain])
            rows.update(zip(plain, logits, strict=True))
        return torch.stack([rows[i] for i in range(len(images))])

    def plain_logits(self, images: Sequence[Image.Image], questions: Sequence[str]) -> torch.Tensor:
        """The answer logits from one left-padded batched pass over every pair."""
        batch = self.encode(images, [self.question_prompt(q) for q in questions])
        extra = {"logits_to_keep": 1} if self._keep_last else {}
        with torch.inference_mode():
            return self.model(**batch, **extra).logits[:, -1, :]

    def shared_prefix_logits(
        self, image: Image.Image, questions: Sequence[str]
    ) -> torch.Tensor | None:
        """The answer logits of ``questions`` about one ``image``, from one pass over their
        common token prefix (with the pixels, keeping its key/value cache) and one batched
        pass over the rest of each prompt on top of that cache; None when the prompts cannot
        be split after the image (see :meth:`split_prompts`)."""
        split = self.split_prompts(image, [self.question_prompt(q) for q in questions])
        if split is None:
            return None
        prefix, pixels, suffixes = split
        n, width = len(suffixes), max(len(s) for s in suffixes)
        pad = int(self.tokenizer.pad_token_id)
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in suffixes], device=self.device)
        lengths = torch.tensor([len(s) for s in suffixes], device=self.device)
        steps = torch.arange(width, device=self.device)
        suffix_mask = (steps[None, :] < lengths[:, None]).long()
        length = prefix.shape[1]
        with torch.inference_mode():
            out = self.model(
                input_ids=prefix,
                attention_mask=torch.ones_like(prefix),
                **pixels,
                use_cache=True,
                **({"logits_to_keep": 1} if self._keep_last else {}),
            )
            cache = getattr(out, self._cache_arg)
            cache.batch_repeat_interleave(n)
            last = (lengths - 1)[:, None]  # each row's last real token (suffixes right-padded)
            out = self.model(
                input_ids=ids,
                attention_mask=torch.cat(
                    [torch.ones(n, length, dtype=torch.long, device=self.device), suffix_mask], 1
                ),
                position_ids=(length + steps)[None, :].expand(n, -1),
                **{self._cache_arg: cache},
                use_cache=True,
                **({"logits_to_keep": last} if self._keep_last else {}),
            )
            if self._keep_last:
                return out.logits[:, 0, :]
            return out.logits[torch.arange(n, device=self.device), lengths - 1]

    def split_prompts(
        self, image: Image.Image, prompts: Sequence[str]
    ) -> tuple[torch.Tensor, dict[str, Any], list[list[int]]] | None:
        """``(prefix ids (1, P), the processor's image inputs, each prompt's remaining ids)``
        such that prefix + remainder are exactly the ids the plain path builds for each
        prompt, the prefix holds every image token and each remainder at least one token.

        The chat-templated prompts are tokenized without the image expanded; what follows
        the (last) image placeholder is each prompt's tail. One processor call on the first
        prompt gives the expanded ids (whose tail must be that prompt's tail: checked) and
        the pixels; the tails' longest common start joins the prefix. None when a prompt has
        no image placeholder, the prompts differ before it, the processor's ids do not end
        in the tail, or it returns per-token inputs other than ids and mask.
        """
        placeholder = getattr(self.processor, "image_token", None)
        place_id = self.tokenizer.convert_tokens_to_ids(placeholder) if placeholder else None
        if place_id is None or place_id == self.tokenizer.unk_token_id:
            return None
        texts = self.processor.apply_chat_template(
            [image_messages(image, p) for p in prompts], add_generation_prompt=True, tokenize=False
        )
        heads, tails = [], []
        for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
            if place_id not in ids:
                return None
            cut = len(ids) - ids[::-1].index(place_id)
            heads.append(ids[:cut])
            tails.append(ids[cut:])
        if any(head != heads[0] for head in heads) or min(len(t) for t in tails) == 0:
            return None
        batch = self.encode([image], [prompts[0]])
        first = batch.pop("input_ids")
        batch.pop("attention_mask", None)
        full = first.shape[1]
        if any(torch.is_tensor(v) and v.dim() == 2 and v.shape[1] == full for v in batch.values()):
            return None  # e.g. token_type_ids: per-token inputs this split does not carry
        tail = tails[0]
        if first[0, full - len(tail) :].tolist() != tail:
            return None
        shared = common_prefix_length(tails, limit=min(len(t) for t in tails) - 1)
        prefix = first[:, : full - len(tail) + shared]
        return prefix, batch, [t[shared:] for t in tails]


class ChatVLMGrader(_ChatVLM):
    """A chat VLM as a grader (the ``judge`` role): greedy answers with, per generated token,
    its top ``top_logprobs`` alternatives (log-softmax of the model's raw logits at that step),
    from one batched ``generate`` call.

    Token texts are cut from the incremental decoding of the answer, so they concatenate to
    the answer's text (a token that ends inside a multi-byte character has the text "" and
    the next one carries the character); each alternative is the text of that one token
    (alternatives decoding to the same text are summed).
    Option: ``top_logprobs`` (20).

    >>> from factcap.backends import registry
    >>> from PIL import Image
    >>> from factcap.examples import example_paths
    >>> image = Image.open(example_paths()[0]).convert("RGB")
    >>> grader = registry.build("judge", "tiny:chat_vlm")
    >>> [answer] = grader.generate([image], ["Rate the caption 1-5."], max_new_tokens=4)
    >>> "".join(t.text for t in answer.tokens) == answer.text
    True
    """

    defaults: dict[str, Any] = {"top_logprobs": 20}

    def _check(self, options: dict[str, Any]) -> None:
        check_int(type(self).__name__, "top_logprobs", options["top_logprobs"], 1)

    def generate(
        self, images: Sequence[Image.Image], prompts: Sequence[str], max_new_tokens: int = 128
    ) -> list[Generation]:
        """One :class:`~factcap.roles.Generation` per (image, prompt) pair, with tokens."""
        if not images:
            return []
        batch = self.encode(images, prompts)
        kwargs = generation_kwargs(max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
        with torch.inference_mode():
            output = self.model.generate(
                **batch, **kwargs, output_logits=True, return_dict_in_generate=True
            )
            k = min(int(self.options["top_logprobs"]), output.logits[0].shape[-1])
            steps = [torch.log_softmax(step.float(), -1).topk(k, -1) for step in output.logits]
        values = torch.stack([s.values for s in steps], 1).cpu().tolist()  # (batch, steps, k)
        ids = torch.stack([s.indices for s in steps], 1).cpu().tolist()
        new = output.sequences[:, batch["input_ids"].shape[1] :].cpu().tolist()
        stop = set(self._stop_ids())
        texts: dict[int, str] = {}

        def text_of(token_id: int) -> str:
            if token_id not in texts:
                texts[token_id] = self.tokenizer.decode([token_id], skip_special_tokens=True)
            return texts[token_id]

        results = []
        for row, chosen in enumerate(new):
            n = next((i for i, t in enumerate(chosen) if t in stop), len(chosen))
            tokens = []
            before = ""
            for i in range(n):
                upto = self.tokenizer.decode(chosen[: i + 1], skip_special_tokens=True)
                top: dict[str, float] = {}
                for alt, logprob in zip(ids[row][i], values[row][i], strict=True):
                    text = text_of(alt)  # two ids of one text: their probabilities add up
                    top[text] = float(np.logaddexp(top[text], logprob)) if text in top else logprob
                # a token that ends inside a character (byte-level BPE) gives "\ufffd":
                # its text is "" and the next token carries the whole character
                if (upto.endswith("\ufffd") and i + 1 < n) or not upto.startswith(before):
                    tokens.append(TokenLogprobs("", top))
                    continue
                tokens.append(TokenLogprobs(upto[len(before) :], top))
                before = upto
            results.append(Generation(before, tokens))
        return results

    def _stop_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        ids = eos if isinstance(eos, list) else [eos]
        return [int(i) for i in ids if i is not None] + [int(self.tokenizer.pad_token_id)]
