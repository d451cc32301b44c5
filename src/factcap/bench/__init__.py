"""Benchmarks that run offline with exact ground truth (``factcap bench ...``)."""
