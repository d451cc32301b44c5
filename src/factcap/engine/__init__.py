"""The batch engine: dataset sources (readers) and sinks (writers).

Sources turn what the user names into a stream of :class:`~factcap.inputs.InputItem`;
sinks write finished :class:`~factcap.schema.Record` objects. Neither loads a dataset whole.

>>> from factcap.engine import SINK_FORMATS, open_sink, open_source
>>> SINK_FORMATS
('jsonl', 'parquet', 'webdataset')
"""

from __future__ import annotations

from factcap.engine.records import RecordFile, read_records
from factcap.engine.sinks import (
    SINK_FORMATS,
    JsonlSink,
    ParquetSink,
    Sink,
    WebDatasetSink,
    open_sink,
)
from factcap.engine.sources import BrokenItem, expand_braces, open_source

__all__ = [
    "SINK_FORMATS",
    "BrokenItem",
    "JsonlSink",
    "RecordFile",
    "ParquetSink",
    "Sink",
    "WebDatasetSink",
    "expand_braces",
    "open_sink",
    "open_source",
    "read_records",
]
