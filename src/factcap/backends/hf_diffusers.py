"""Text-to-image through diffusers (SD-Turbo, SDXL-Turbo, any text-to-image pipeline).

Imported lazily by the registry (``t2i`` role, ``hf:`` scheme): the pipeline class comes from
the checkpoint's ``model_index.json`` via ``AutoPipelineForText2Image``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from factcap.backends.hf_common import load_pretrained, resolve_device, resolve_dtype
from factcap.backends.options import check_int, take_options
from factcap.errors import require

require("diffusers", "hf")

import torch  # noqa: E402

if TYPE_CHECKING:
    from PIL import Image

_DEFAULTS: dict[str, Any] = {
    "num_inference_steps": 1,
    "guidance_scale": 0.0,
    "height": None,
    "width": None,
}


def _dtype_keyword() -> str:
    """diffusers 0.42 renamed ``from_pretrained``'s ``torch_dtype`` to ``dtype``."""
    import diffusers
    from packaging.version import Version

    return "dtype" if Version(diffusers.__version__) >= Version("0.42") else "torch_dtype"


class DiffusersTextToImage:
    """Generates one image per prompt with a diffusers pipeline; ``seeds[i]`` fixes image ``i``.

    A batch is ONE pipeline call with one CPU ``torch.Generator`` per seed: each image's
    starting noise depends only on its own seed, so an image is the same whether it is drawn
    alone or in a batch, and on any device (up to floating-point rounding).

    Options: ``num_inference_steps`` (default 1) and ``guidance_scale`` (default 0.0, i.e. no
    classifier-free guidance) suit distilled "turbo" pipelines; raise them (e.g. 25 and 7.5)
    for ordinary Stable Diffusion. ``height`` and ``width`` (pixels, both or neither; None =
    the pipeline's default size).

    Prompts longer than the text encoder's context (77 CLIP tokens for SD / SDXL) are cut
    there by diffusers: the prompt is conditioning, not a score, so the image is drawn from
    its first 77 tokens; :meth:`prompt_truncated` tells which prompts were cut.

    >>> from factcap.backends import registry
    >>> t2i = registry.build("t2i", "tiny:sd")  # random weights: noise, at 32 px
    >>> len(t2i.generate(["a cat", "a dog"], seeds=[0, 0]))
    2

    With a real pipeline::

        t2i = registry.build("t2i", "hf:stabilityai/sd-turbo")
        [im.size for im in t2i.generate(["a cat", "a dog"], seeds=[0, 0])]
        # [(512, 512), (512, 512)]
    """

    def __init__(
        self, location: str, device: str | None = None, dtype: str | None = None, **options: Any
    ):
        import diffusers

        owner = type(self).__name__
        opts = take_options(owner, options, _DEFAULTS)
        check_int(owner, "num_inference_steps", opts["num_inference_steps"], 1)
        scale = opts["guidance_scale"]
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale < 0:
            raise ValueError(f"{owner}: guidance_scale must be a number >= 0, got {scale!r}")
        for side in ("height", "width"):
            if opts[side] is not None:
                check_int(owner, side, opts[side], 8)
        if (opts["height"] is None) != (opts["width"] is None):
            # diffusers replaces both by its default size when either is missing
            raise ValueError(f"{owner}: give both height and width, or neither")
        self.options = opts
        self.name = f"hf:{location}"
        self.location = location
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.pipe = load_pretrained(
            diffusers.AutoPipelineForText2Image, location, **{_dtype_keyword(): self.dtype}
        )
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)

    @property
    def max_prompt_tokens(self) -> int | None:
        """The (first) text encoder's context in tokens, None if the pipeline has no tokenizer."""
        tokenizer = getattr(self.pipe, "tokenizer", None)
        return int(tokenizer.model_max_length) if tokenizer is not None else None

    def prompt_truncated(self, prompts: Sequence[str]) -> list[bool | None]:
        """Whether each prompt is longer than :attr:`max_prompt_tokens` (None: unknown)."""
        limit = self.max_prompt_tokens
        if limit is None:
            return [None] * len(prompts)
        lengths = self.pipe.tokenizer(list(prompts), truncation=False, verbose=False)["input_ids"]
        return [len(ids) > limit for ids in lengths]

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]:
        """One RGB image per prompt, from one pipeline call; ``seeds[i]`` seeds image ``i``."""
        if len(prompts) != len(seeds):
            raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
        if not prompts:
            return []
        generators = [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]
        with torch.inference_mode():
            result = self.pipe(
                prompt=list(prompts),
                generator=generators,
                num_inference_steps=self.options["num_inference_steps"],
                guidance_scale=float(self.options["guidance_scale"]),
                height=self.options["height"],
                width=self.options["width"],
                num_images_per_prompt=1,
                output_type="pil",
            )
        images = result.images
        if len(images) != len(prompts):
            raise RuntimeError(f"the pipeline returned {len(images)} images for {len(prompts)}")
        return [image.convert("RGB") for image in images]
