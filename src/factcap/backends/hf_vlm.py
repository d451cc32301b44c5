"""Chat vision-language models through transformers (LLaVA, Qwen2.5-VL, SmolVLM, ...).

Any checkpoint that ``AutoModelForImageTextToText`` and ``AutoProcessor`` load, whose processor
has a chat template taking ``{"type": "image"}`` / ``{"type": "text"}`` content parts, serves
as a captioner (:class:`ChatVLMCaptioner`), as a yes/no judge (:class:`ChatVLMJudge`) and as
a grader with token probabilities (:class:`ChatVLMGrader`).
Imported lazily by the registry.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from factcap.backends.hf_common import HFModel, YesNoJudge, decode_new_tokens, generation_kwargs
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


class _ChatVLM(HFModel):
    """Shared loading and input building: chat-templated, left-padded image+prompt batches."""

    model_class = "AutoModelForImageTextToText"
    processor_class = "AutoProcessor"
    defaults: dict[str, Any] = {}

    def __init__(
        self, location: str, device: str | None = None, dtype: str | None = None, **options: Any
    ):
        opts = take_options(type(self).__name__, options, self.defaults)
        self._check(opts)
        super().__init__(location, device=device, dtype=dtype)
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


class ChatVLMJudge(YesNoJudge, _ChatVLM):
    """A chat VLM as a yes/no judge: P(yes) from one batched forward pass.

    Each question is asked as "<question> Answer yes or no." after the image; at the first
    answer position, P(yes) and P(no) each sum the probabilities of the first tokens of their
    common spellings ("yes", "Yes", " yes", ...), and the result is P(yes) / (P(yes) + P(no)).
    Option: ``instruction`` (the sentence appended to every question).

    >>> from factcap.backends import registry
    >>> from PIL import Image
    >>> from factcap.examples import example_paths
    >>> image = Image.open(example_paths()[0]).convert("RGB")
    >>> [p] = registry.build("vqa", "tiny:chat_vlm").yes_probability([image], ["Is there a cat?"])
    >>> 0.0 < p < 1.0
    True
    """

    defaults: dict[str, Any] = {"instruction": JUDGE_INSTRUCTION}

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
        self._keep_last = "logits_to_keep" in inspect.signature(self.model.forward).parameters

    def _check(self, options: dict[str, Any]) -> None:
        check_text(type(self).__name__, "instruction", options["instruction"])

    def question_prompt(self, question: str) -> str:
        """The text asked next to the image for ``question``."""
        return judge_prompt(question, self.options["instruction"])

    def answer_logits(
        self, images: Sequence[Image.Image], questions: Sequence[str]
    ) -> torch.Tensor:
        """The logits after the assistant prompt, for every question asked with its image."""
        batch = self.encode(images, [self.question_prompt(q) for q in questions])
        extra = {"logits_to_keep": 1} if self._keep_last else {}
        with torch.inference_mode():
            return self.model(**batch, **extra).logits[:, -1, :]


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
