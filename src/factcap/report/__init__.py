"""The static HTML report (``factcap report``): see :mod:`factcap.report.html`."""

from factcap.report.html import build_report, write_report

__all__ = ["build_report", "write_report"]
