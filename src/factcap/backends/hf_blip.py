"""BLIP, BLIP-2 and Kosmos-2 captioners and the BLIP VQA model (transformers).

Each backend runs a whole batch through one ``generate`` call (captioners) or one forward pass
(VQA). These models are captioners, not instruction followers: the text they are conditioned
on is the caption *prefix* given by the ``prompt`` option when the backend is built, so the
per-call ``prompt`` of :meth:`caption` (meant for chat VLMs) is not used. The prefix is part
of the returned caption, as the models write it ("a photo of a cat on a sofa").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from factcap.backends.hf_common import HFModel, YesNoVQA, generation_kwargs
from factcap.backends.options import check_int, check_text, check_token_counts, take_options

if TYPE_CHECKING:
    from PIL import Image

_GENERATION_DEFAULTS: dict[str, Any] = {"max_new_tokens": 40, "min_new_tokens": 0, "num_beams": 1}


class _BlipFamilyCaptioner(HFModel):
    """Shared option handling and decoding of the BLIP-family captioners."""

    defaults: dict[str, Any] = {**_GENERATION_DEFAULTS, "prompt": None}

    def __init__(
        self, location: str, device: str | None = None, dtype: str | None = None, **options: Any
    ):
        owner = type(self).__name__
        opts = take_options(owner, options, self.defaults)
        check_token_counts(owner, opts["max_new_tokens"], opts["min_new_tokens"])
        check_int(owner, "num_beams", opts["num_beams"], 1)
        if opts["min_new_tokens"] > opts["max_new_tokens"]:
            raise ValueError(f"{owner}: min_new_tokens must not exceed max_new_tokens")
        check_text(owner, "prompt", opts["prompt"], optional=True)
        super().__init__(location, device=device, dtype=dtype)
        self.options = opts
        self.prompt: str | None = opts["prompt"] or None

    def _generate_kwargs(self) -> dict[str, Any]:
        # The model's own generation config gives the pad token.
        return generation_kwargs(
            self.options["max_new_tokens"],
            self.options["min_new_tokens"],
            num_beams=self.options["num_beams"],
        )

    def caption(self, images: Sequence[Image.Image], prompt: str | None = None) -> list[str]:
        """One caption per image, from one ``generate`` call (``prompt`` is not used)."""
        if not images:
            return []
        text = [self.prompt] * len(images) if self.prompt else None
        inputs = self.to_device(
            self.processor(images=list(images), text=text, padding=True, return_tensors="pt")
        )
        with torch.inference_mode():
            sequences = self.model.generate(**inputs, **self._generate_kwargs())
        return self._captions(sequences, inputs)

    def _captions(self, sequences: torch.Tensor, inputs: dict[str, Any]) -> list[str]:
        """The captions from ``generate``'s output for the batch ``inputs``."""
        return self._decode(sequences)

    def _decode(self, sequences: torch.Tensor) -> list[str]:
        texts = self.processor.batch_decode(sequences, skip_special_tokens=True)
        return [" ".join(text.split()) for text in texts]


class BlipCaptioner(_BlipFamilyCaptioner):
    """BLIP image captioning (``BlipForConditionalGeneration``), optionally conditioned on a
    caption prefix.

    Options: ``prompt`` (caption prefix, e.g. ``"a photography of"``; default none),
    ``max_new_tokens`` (40), ``min_new_tokens`` (0), ``num_beams`` (1).

    >>> from PIL import Image
    >>> from factcap.backends import registry
    >>> from factcap.examples import example_paths
    >>> photo = Image.open(example_paths()[0]).convert("RGB")
    >>> cap = registry.build("captioner", "tiny:blip", max_new_tokens=4)  # random weights
    >>> len(cap.caption([photo, photo]))
    2

    With the real checkpoint (downloaded once)::

        cap = BlipCaptioner("Salesforce/blip-image-captioning-base")
        cap.caption([Image.open("cat.jpg"), Image.open("dog.jpg")])
        # ['a cat laying on a couch', 'a dog running on the grass']
    """

    model_class = "BlipForConditionalGeneration"
    processor_class = "BlipProcessor"


class Blip2Captioner(_BlipFamilyCaptioner):
    """BLIP-2 captioning (``Blip2ForConditionalGeneration``, OPT or Flan-T5 language model).

    Options: ``prompt`` (caption prefix such as ``"a photo of"``, or a question in BLIP-2's
    ``"Question: ... Answer:"`` form; default none), ``max_new_tokens`` (40),
    ``min_new_tokens`` (0), ``num_beams`` (1). The returned caption is the prompt followed by
    what the model wrote, whether the language model echoes the prompt (OPT) or not (Flan-T5).

    >>> from PIL import Image
    >>> from factcap.backends import registry
    >>> from factcap.examples import example_paths
    >>> photo = Image.open(example_paths()[0]).convert("RGB")
    >>> cap = registry.build("captioner", "tiny:blip2", prompt="a photo of", max_new_tokens=4)
    >>> cap.caption([photo])[0].startswith("a photo of")
    True

    With the real checkpoint::

        cap = Blip2Captioner("Salesforce/blip2-opt-2.7b", prompt="a photo of")
        cap.caption([Image.open("cat.jpg")])  # ['a photo of a cat sitting on a couch']
    """

    model_class = "Blip2ForConditionalGeneration"
    processor_class = "Blip2Processor"

    def __init__(
        self, location: str, device: str | None = None, dtype: str | None = None, **options: Any
    ):
        super().__init__(location, device=device, dtype=dtype, **options)
        # Decoder-only generation appends to the prompt: pad on the left.
        self.processor.tokenizer.padding_side = "left"

    def _captions(self, sequences: torch.Tensor, inputs: dict[str, Any]) -> list[str]:
        """The prompt, then what the language model wrote after it."""
        if self.prompt and not self.model.config.is_encoder_decoder:
            sequences = sequences[:, inputs["input_ids"].shape[1] :]
        written = self._decode(sequences)
        if not self.prompt:
            return written
        return [f"{self.prompt.strip()} {caption}".strip() for caption in written]


class Kosmos2Captioner(_BlipFamilyCaptioner):
    """Kosmos-2 grounded captioning (``Kosmos2ForConditionalGeneration``).

    The model is prompted with ``"<grounding>An image of"`` (option ``prompt``); the grounding
    markup it writes (``<phrase>``, ``<object>``, patch-index tokens) is removed with the
    processor's ``post_process_generation``, leaving plain text. Options as for
    :class:`BlipCaptioner`.

    >>> from PIL import Image
    >>> from factcap.backends import registry
    >>> from factcap.examples import example_paths
    >>> photo = Image.open(example_paths()[0]).convert("RGB")
    >>> cap = registry.build("captioner", "tiny:kosmos2", max_new_tokens=4)
    >>> [type(text) for text in cap.caption([photo])]
    [<class 'str'>]

    With the real checkpoint::

        cap = Kosmos2Captioner("microsoft/kosmos-2-patch14-224")
        cap.caption([Image.open("snowman.jpg")])
        # ['An image of a snowman warming himself by a fire.']
    """

    model_class = "Kosmos2ForConditionalGeneration"
    processor_class = "Kosmos2Processor"
    defaults: dict[str, Any] = {**_GENERATION_DEFAULTS, "prompt": "<grounding>An image of"}

    def caption(self, images: Sequence[Image.Image], prompt: str | None = None) -> list[str]:
        """One caption per image, from one ``generate`` call (``prompt`` is not used)."""
        if not images:
            return []
        # Every image gets the same prompt, so the rows have equal length: no padding needed.
        inputs = self.processor(
            images=list(images),
            text=[self.prompt or ""] * len(images),
            num_image_tokens=self.model.config.latent_query_num,
            return_tensors="pt",
        )
        inputs = self.to_device(inputs)
        with torch.inference_mode():
            sequences = self.model.generate(
                pixel_values=inputs["pixel_values"],
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                image_embeds_position_mask=inputs["image_embeds_position_mask"],
                **self._generate_kwargs(),
            )
        texts = self.processor.batch_decode(sequences, skip_special_tokens=True)
        captions = [self.processor.post_process_generation(text)[0] for text in texts]
        return [" ".join(caption.split()) for caption in captions]


def _mask_padded_questions(decoder: torch.nn.Module) -> None:
    """Make the answer decoder's cross-attention honour the question padding mask.

    In transformers 5.x ``BlipTextAttention`` hands the cross-attention mask to
    ``BlipTextSelfAttention`` as ``attention_mask``, which the latter discards for
    cross-attention (it reads ``encoder_attention_mask``, left unset), so padded question
    tokens were attended to and a pair's answer depended on the longest question in its batch.
    This pre-hook passes the mask under the name that is read; it changes nothing once
    transformers passes ``encoder_attention_mask`` itself.
    """

    def restore_mask(
        module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        cross = kwargs.get("encoder_hidden_states") is not None
        if cross and kwargs.get("encoder_attention_mask") is None:
            kwargs["encoder_attention_mask"] = kwargs.get("attention_mask")
        return args, kwargs

    for layer in decoder.bert.encoder.layer:
        cross = getattr(layer, "crossattention", None)
        if cross is not None:
            cross.self.register_forward_pre_hook(restore_mask, with_kwargs=True)


def distinct_images(images: Sequence[Image.Image]) -> tuple[list[Image.Image], list[int]]:
    """The distinct images of a batch, and for each pair the index of its image among them.

    Two entries are the same image when they are the same object (``id``; the pipeline
    passes one object for every claim about an item), checked against its size and mode;
    pixels are never compared or hashed.

    >>> from PIL import Image
    >>> a, b = Image.new("RGB", (4, 4)), Image.new("RGB", (4, 4))
    >>> kept, index = distinct_images([a, b, a, a])
    >>> len(kept), index
    (2, [0, 1, 0, 0])
    """
    seen: dict[tuple[int, tuple[int, int], str], int] = {}
    kept: list[Image.Image] = []
    index: list[int] = []
    for image in images:
        key = (id(image), tuple(image.size), image.mode)
        if key not in seen:
            seen[key] = len(kept)
            kept.append(image)
        index.append(seen[key])
    return kept, index


@contextmanager
def _cross_attention_per_image(
    encoder: torch.nn.Module, expanded: torch.Tensor, distinct: torch.Tensor, index: list[int]
) -> Iterator[None]:
    """While active, the question encoder's cross-attention to the image runs once per
    DISTINCT image: the query tokens of all questions about an image are laid side by side
    in one sequence and attend to that image's keys and values, projected once.

    ``encoder`` is a BLIP text model called with ``encoder_hidden_states=expanded``
    (``distinct[index]``: one row per question) and an all-ones image mask. Each query token's
    attention is a softmax over the image's positions alone, independent of the other query
    tokens, so regrouping gives every question the same context as before (to float
    rounding) without projecting or copying the image's 577 positions per question. Only calls
    given exactly ``expanded`` are regrouped; the hooks are removed on exit.
    """
    n_images = distinct.shape[0]
    slots: list[int] = []
    filled = [0] * n_images
    for image in index:
        slots.append(filled[image])
        filled[image] += 1
    group = torch.tensor(index, device=distinct.device)
    slot = torch.tensor(slots, device=distinct.device)
    width = max(filled)
    length: list[int] = []

    def regroup(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if kwargs.get("encoder_hidden_states") is not expanded:
            return None
        (hidden, *rest) = args
        _, tokens, dim = hidden.shape
        length[:] = [tokens]
        grouped = hidden.new_zeros(n_images, width, tokens, dim)
        grouped[group, slot] = hidden
        # the image mask is all ones: nothing to mask among the image's positions
        kwargs = {**kwargs, "encoder_hidden_states": distinct, "attention_mask": None}
        kwargs.pop("encoder_attention_mask", None)
        return (grouped.view(n_images, width * tokens, dim), *rest), kwargs

    def ungroup(
        module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> Any:
        if kwargs.get("encoder_hidden_states") is not distinct:
            return None
        context, *rest = output
        context = context.view(n_images, width, length[0], context.shape[-1])[group, slot]
        return (context, *rest)

    handles = []
    for layer in encoder.encoder.layer:
        cross = getattr(layer, "crossattention", None)
        if cross is not None:
            handles.append(cross.self.register_forward_pre_hook(regroup, with_kwargs=True))
            handles.append(cross.self.register_forward_hook(ungroup, with_kwargs=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class BlipVQA(YesNoVQA, HFModel):
    """BLIP visual question answering asked yes or no (``BlipForQuestionAnswering``).

    ``yes_probability`` encodes the image, encodes each question against it, and runs the
    answer decoder for ONE step from its start token. From the logits of the first answer
    token it takes the entries of the tokenizer's ``"yes"`` and ``"no"`` tokens and returns

        P(yes) / (P(yes) + P(no))  ==  softmax([logit_yes, logit_no])[0]

    i.e. the model's answer distribution renormalised over the two answers, ignoring the mass
    it puts on any other first token. The batch goes through one forward pass; padded
    questions are masked, so a pair gets the same probability alone or in a batch.

    Option ``encode_once`` (default true): the vision encoder runs once per DISTINCT image of
    a batch (:func:`distinct_images`), and the question encoder's cross-attention to an image
    runs once for all questions about it (their tokens side by side, the image's keys and
    values projected once). Sixteen questions about one photo then cost little more than one. ``encode_once=False`` (also
    settable on the instance) encodes the image again for every pair, as before; both give
    the same probabilities (to float rounding).

    >>> from PIL import Image
    >>> from factcap.backends import registry
    >>> from factcap.examples import example_paths
    >>> photo = Image.open(example_paths()[0]).convert("RGB")
    >>> vqa = registry.build("vqa", "tiny:blip_vqa")  # random weights: any probability
    >>> [0.0 <= p <= 1.0 for p in vqa.yes_probability([photo, photo], ["a cat?", "a dog?"])]
    [True, True]

    With the real checkpoint::

        vqa = BlipVQA("Salesforce/blip-vqa-base")
        vqa.yes_probability([cat, cat], ["is there a cat?", "is there a dog?"])  # [0.98, 0.03]
    """

    model_class = "BlipForQuestionAnswering"
    processor_class = "BlipProcessor"

    def __init__(
        self, location: str, device: str | None = None, dtype: str | None = None, **options: Any
    ):
        owner = type(self).__name__
        opts = take_options(owner, options, {"encode_once": True})
        if not isinstance(opts["encode_once"], bool):
            raise ValueError(f"{owner}: encode_once must be true or false")
        super().__init__(location, device=device, dtype=dtype)
        self.options = opts
        self.encode_once: bool = opts["encode_once"]
        tokenizer = self.processor.tokenizer
        self.yes_id = self._answer_id(tokenizer, "yes")
        self.no_id = self._answer_id(tokenizer, "no")
        if self.yes_id == self.no_id:
            raise ValueError(f"{location}: 'yes' and 'no' map to the same token; not a VQA model")
        self.yes_ids, self.no_ids = [self.yes_id], [self.no_id]
        _mask_padded_questions(self.model.text_decoder)

    @property
    def batch_by_image(self) -> bool:
        """With ``encode_once`` a call encodes each distinct image once, so callers put every
        question about an image into one call (:func:`factcap.roles.batches_by_image`)."""
        return self.encode_once

    @staticmethod
    def _answer_id(tokenizer: Any, word: str) -> int:
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        if not ids or ids[0] == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no token for the answer {word!r}")
        return int(ids[0])

    def answer_logits(
        self, images: Sequence[Image.Image], questions: Sequence[str]
    ) -> torch.Tensor:
        """The answer decoder's first-step logits, one row per (image, question) pair.

        Questions longer than the text encoder's positions are truncated to fit (by the
        tokenizer, from the end)."""
        distinct, index = distinct_images(images) if self.encode_once else (list(images), None)
        limit = self.model.config.text_config.max_position_embeddings
        inputs = self.to_device(
            self.processor(
                images=distinct,
                text=list(questions),
                padding=True,
                truncation=True,
                max_length=limit,
                return_tensors="pt",
            )
        )
        model = self.model
        with torch.inference_mode():
            image_embeds = model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state
            if index is None:
                question_embeds = self._encode_questions(inputs, image_embeds)
            else:
                expanded = image_embeds[torch.tensor(index, device=image_embeds.device)]
                with _cross_attention_per_image(model.text_encoder, expanded, image_embeds, index):
                    question_embeds = self._encode_questions(inputs, expanded)
            start = torch.full(
                (len(questions), 1), model.decoder_start_token_id, device=self.device
            )
            return model.text_decoder(
                input_ids=start,
                encoder_hidden_states=question_embeds,
                encoder_attention_mask=inputs["attention_mask"],
            ).logits[:, -1, :]

    def _encode_questions(self, inputs: dict[str, Any], image_embeds: torch.Tensor) -> torch.Tensor:
        """The question encoder's output, each question attending to its row of images."""
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        return self.model.text_encoder(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_mask,
        ).last_hidden_state
