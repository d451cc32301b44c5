"""English text handling shared by the pipeline and the metrics; no models, no torch.

- :mod:`factcap.text.english` — the one ``singular`` / ``plural``, number words,
  ``content_words`` and ``clean_text``.
- :mod:`factcap.text.chunk` — the rule-based tagger and noun-phrase chunker of the fallback
  claims (``noun_phrases``, ``head_phrase``, ``chunks``, ``tag``).
- :mod:`factcap.text.jsonrepair` — JSON recovered from untrusted LLM answers
  (``extract_json``, ``json_values``, ``ParseError``).
- :mod:`factcap.text.synonyms` — synonyms from WordNet read offline, or CHAIR's COCO table.
- :mod:`factcap.text.sanitize` — text from records made safe to show or write on one line
  (``display_text``, ``one_line``, ``display_safe``: control and bidi characters removed).

Each name lives in one module and is imported from there; this package re-exports nothing.
"""
