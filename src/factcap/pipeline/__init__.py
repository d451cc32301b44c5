"""The fact-checking pipeline: decode, then the config's stages (propose, OCR, claims, detect,
check, compose; :mod:`factcap.pipeline.plan`). ARCHITECTURE.md has the picture."""

from factcap.pipeline.runner import Pipeline

__all__ = ["Pipeline"]
