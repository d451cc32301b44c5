"""The shapes world: a benchmark where the truth is known exactly, and every model is trained.

Scenes of one to four coloured shapes are generated from a seed and rendered with Pillow
(:mod:`.world`); captions are scored against the generator's ground truth (:mod:`.scoring`).
``factcap bench shapes train`` trains one small model per pipeline role from scratch — real
transformers architectures saved as normal checkpoint directories that factcap loads with
``hf:<dir>`` — and ``factcap bench shapes run`` measures what fact-checking buys: the
hallucination rate of each captioner against the final caption's, with and without
verification (:mod:`.run`).
"""
