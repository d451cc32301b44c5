"""Curation: from captioned records to a training set.

* :mod:`factcap.curation.filter_expr` — the ``--where`` language: a whitelisted, ``eval``-free
  expression over named values, with three-valued logic for missing values.
* :mod:`factcap.curation.filter` — ``factcap filter``: records (and their evaluate scores)
  into kept and rejected outputs of any sink format.
* :mod:`factcap.curation.export` — ``factcap export``: records as COCO, LLaVA, a Hugging Face
  dataset, an image + ``.txt`` folder or CSV; ``EXPORTERS`` is the table of formats.

Nothing here imports torch; ``datasets`` is imported only to write the ``hf`` format.
"""
