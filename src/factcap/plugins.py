"""Entry-point groups through which installed packages extend factcap.

``factcap.backends`` and ``factcap.metrics``: each entry point names a function that factcap
calls once, the first time it looks a backend (or metric) up; the function registers what the
package adds (:func:`factcap.backends.registry.register`,
:func:`factcap.metrics.register_metric`).

>>> call_group("factcap.no-such-group")
0
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

log = logging.getLogger(__name__)
_called: set[str] = set()


def call_group(group: str) -> int:
    """Call every entry point of ``group`` once per process; returns how many ran now. A
    plug-in that fails is logged and skipped: it must not break what factcap ships."""
    if group in _called:
        return 0
    _called.add(group)
    ran = 0
    for point in entry_points(group=group):
        try:
            point.load()()
            ran += 1
        except Exception as err:  # noqa: BLE001 - someone else's code
            log.warning("factcap: plug-in %r (%s) failed to load: %s", point.value, group, err)
    return ran
