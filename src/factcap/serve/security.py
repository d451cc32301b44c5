"""The API key: required on every route but ``/healthz`` when the service has one
(:func:`factcap.access.key_checker`: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``)."""

from __future__ import annotations

from factcap.access import key_checker

__all__ = ["key_checker"]
