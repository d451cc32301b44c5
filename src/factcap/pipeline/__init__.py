"""The fact-checking pipeline: propose → verify → compose (see DESIGN.md)."""

from factcap.pipeline.runner import Pipeline

__all__ = ["Pipeline"]
