"""factcap: detailed image captions, fact-checked against the image.

Importing factcap is cheap: models (and torch) load only when a pipeline is built.

>>> import factcap
>>> factcap.__version__
'0.1.0'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Pipeline", "Record", "load_config", "__version__"]

if TYPE_CHECKING:
    from factcap.config import load_config
    from factcap.pipeline import Pipeline
    from factcap.schema import Record


def __getattr__(name: str) -> Any:
    if name == "Pipeline":
        from factcap.pipeline import Pipeline

        return Pipeline
    if name == "Record":
        from factcap.schema import Record

        return Record
    if name == "load_config":
        from factcap.config import load_config

        return load_config
    raise AttributeError(name)
