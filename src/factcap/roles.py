"""Model roles: the small protocol each backend implements, and :data:`ROLES`, the one table
of roles that the config, the pipeline, evaluation and the command line read.

Every protocol method takes a *batch* and returns one result per item, in order. A backend
runs a batch through one forward / generate call (or, for remote servers, concurrent
requests), never a Python loop of single-image calls.

Images are RGB :class:`PIL.Image.Image` objects at their original size (after EXIF
orientation); boxes come back in pixel coordinates of those images.

A configured model has a *slot* name: the role's name, or ``captioner:<i>`` for the i-th of
the roles that take several models (:func:`slot`, :func:`role_of`).

>>> [r.name for r in ROLES.values() if "caption" in r.used_by]
['captioner', 'llm', 'detector', 'vqa', 'ocr']
>>> slot("captioner", 1), role_of("captioner:1"), role_of("llm")
('captioner:1', 'captioner', 'llm')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

ChatMessage = dict  # {"role": "system" | "user" | "assistant", "content": str}

#: What an instruction-following captioner is asked when no prompt is configured.
DEFAULT_CAPTION_PROMPT = "Describe this image in detail."
#: The sentence a chat judge appends to every yes/no question.
JUDGE_INSTRUCTION = "Answer yes or no."


def judge_prompt(question: str, instruction: str = JUDGE_INSTRUCTION) -> str:
    """The text a chat judge is asked for ``question``.

    >>> judge_prompt(" Is there a cat? ", JUDGE_INSTRUCTION)
    'Is there a cat? Answer yes or no.'
    """
    return f"{question.strip()} {instruction}".strip()


def check_pairs(images: Sequence[object], questions: Sequence[str]) -> None:
    """Raise ValueError unless there is exactly one question per image."""
    if len(images) != len(questions):
        raise ValueError(f"got {len(images)} images but {len(questions)} questions")


def batches_by_image(vqa: object) -> bool:
    """Whether the VQA backend ``vqa`` wants every question about an image in one call (its
    optional ``batch_by_image`` attribute; see :class:`VQA`).

    >>> class Plain: ...
    >>> batches_by_image(Plain())
    False
    """
    return getattr(vqa, "batch_by_image", False) is True


def yes_ratio(p_yes: float, p_no: float) -> float:
    """P(yes) renormalised over the two answers: ``p_yes / (p_yes + p_no)``; NaN when both
    are 0 (the model gave neither answer).

    >>> yes_ratio(0.75, 0.25)
    0.75
    """
    total = p_yes + p_no
    return p_yes / total if total > 0 else float("nan")


@dataclass(slots=True)
class Detection:
    """One box found for one text query. ``query`` is the query string it answers."""

    query: str
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in original-image pixels


@dataclass(slots=True)
class TextSpan:
    """A piece of text read from an image by OCR."""

    text: str
    score: float
    box: tuple[float, float, float, float] = field(default=(0.0, 0.0, 0.0, 0.0))


@runtime_checkable
class Captioner(Protocol):
    """Writes one caption per image. ``prompt`` is used by instruction-following models,
    which say so with a class attribute ``accepts_prompt = True`` (absent: the prompt is
    ignored, as BLIP's fixed text prefix; question-guided proposals ask only those that do)."""

    name: str

    def caption(self, images: Sequence[Image.Image], prompt: str | None = None) -> list[str]: ...


@runtime_checkable
class Detector(Protocol):
    """Zero-shot detection: ``queries[i]`` are the phrases to look for in ``images[i]``.

    All queries of one image are answered by one model call; returns, per image, the
    detections above the backend's threshold.
    """

    name: str

    def detect(
        self, images: Sequence[Image.Image], queries: Sequence[Sequence[str]]
    ) -> list[list[Detection]]: ...


@runtime_checkable
class VQA(Protocol):
    """Answers yes/no questions: returns P("yes") for each (image, question) pair.

    The probability comes from the model's logits (or a server's logprobs), renormalised over
    the "yes" and "no" answer tokens. The one exception is an ``openai:`` server that returns
    no logprobs: its answer text gives 1.0 / 0.0 (documented in ``OpenAIVQA``; switch it off
    with ``require_logprobs=True``). NaN means the backend could not answer.

    A backend that does its image work once per distinct image of a call (BLIP's
    ``encode_once``, a chat VLM's ``reuse_prefix``) says so with a true ``batch_by_image``
    attribute (optional; :func:`batches_by_image`): its callers then put every question about
    an image into the same call, and its batch size counts images, not questions.
    """

    name: str

    def yes_probability(
        self, images: Sequence[Image.Image], questions: Sequence[str]
    ) -> list[float]: ...


@runtime_checkable
class LLM(Protocol):
    """A chat language model: one reply string per conversation.

    ``json_schema`` (optional for implementations): a JSON schema the reply should follow.
    A backend that can constrain its output (an ``openai:`` server's structured output)
    uses it; others ignore it, and the caller parses the text tolerantly either way.
    """

    name: str

    def chat(
        self,
        conversations: Sequence[Sequence[ChatMessage]],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        json_schema: Mapping[str, Any] | None = None,
    ) -> list[str]: ...


@runtime_checkable
class Embedder(Protocol):
    """A joint image-text embedding model (CLIP family); rows are L2-normalised."""

    name: str

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class TextToImage(Protocol):
    """Generates one image per prompt; ``seeds[i]`` makes image ``i`` reproducible."""

    name: str

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]: ...


@runtime_checkable
class OCR(Protocol):
    """Reads text from images: a list of spans per image."""

    name: str

    def read(self, images: Sequence[Image.Image]) -> list[list[TextSpan]]: ...


@dataclass(slots=True)
class TokenLogprobs:
    """One generated token: its text and its top alternatives ``{token text: logprob}`` (the
    chosen token among them)."""

    text: str
    top: dict[str, float]


@dataclass(slots=True)
class Generation:
    """A generated answer: its text and, when the backend exposes them, its tokens in order
    (their texts concatenate to ``text``); ``tokens`` is None when it does not."""

    text: str
    tokens: list[TokenLogprobs] | None = None


@runtime_checkable
class Grader(Protocol):
    """A vision chat model that answers a prompt about an image with text and, where it can,
    token probabilities (local logits, a server's ``logprobs``): the ``judge`` role of the
    ``vlm_judge`` metric and of pairwise comparison. Greedy decoding."""

    name: str

    def generate(
        self, images: Sequence[Image.Image], prompts: Sequence[str], max_new_tokens: int = 128
    ) -> list[Generation]: ...


@dataclass(frozen=True, slots=True)
class Role:
    """One model role: its protocol, the config key that configures it, whether that key
    holds a list of models (``many``), and which jobs use it (``caption``: the pipeline's
    stages; ``evaluate``: the metrics)."""

    name: str
    protocol: type
    config_key: str
    many: bool = False
    used_by: frozenset[str] = frozenset({"caption"})
    description: str = ""


def _role(name: str, protocol: type, description: str, **kw: Any) -> tuple[str, Role]:
    return name, Role(name, protocol, kw.pop("config_key", name), description=description, **kw)


_EVALUATE = frozenset({"evaluate"})

#: Every model role, in the order records list them (``Record.models``).
ROLES: dict[str, Role] = dict(
    [
        _role(
            "captioner",
            Captioner,
            "writes a caption (proposal)",
            config_key="captioners",
            many=True,
        ),
        _role(
            "llm",
            LLM,
            "extracts claims, writes the final captions",
            used_by=frozenset({"caption", "evaluate"}),
        ),
        _role("detector", Detector, "open-vocabulary detection of object claims"),
        _role(
            "vqa",
            VQA,
            "yes/no answers for attribute and count claims",
            used_by=frozenset({"caption", "evaluate"}),
        ),
        _role("ocr", OCR, "reads text in the image"),
        _role("embedder", Embedder, "joint image-text embeddings (CLIP)", used_by=_EVALUATE),
        _role("t2i", TextToImage, "regenerates images from captions", used_by=_EVALUATE),
        _role(
            "text_embedder",
            Embedder,
            "sentence embeddings for soft matching (text side only)",
            used_by=_EVALUATE,
        ),
        _role(
            "judge",
            Grader,
            "grades captions against the image: rubric scores, pairwise preferences",
            used_by=_EVALUATE,
        ),
    ]
)


def slot(role: str, index: int | None = None) -> str:
    """The slot name of a configured model: ``role``, or ``role:index`` for a list role."""
    return role if index is None else f"{role}:{index}"


def role_of(slot_name: str) -> str:
    """The role a slot belongs to (``captioner:0`` → ``captioner``)."""
    return slot_name.partition(":")[0]
