"""One exception hierarchy, with messages meant for people.

Every error factcap raises on purpose is a :class:`FactcapError`. Each class says what it
means for the two front ends: ``exit_code`` is what ``factcap`` exits with after printing the
message as one line (no traceback), and ``http_status`` is what ``factcap serve`` answers.

==========================  =========  ====  ================================================
class                       exit code  HTTP  meaning
==========================  =========  ====  ================================================
:class:`UsageError`         2          400   a bad command-line option or request field
:class:`ConfigError`        2          422   an invalid config file or option value
:class:`DataError`          2          422   an input or results file that is not what it
                                             should be (a record that is not JSON, ...)
:class:`ModelNotAvailable`  2          503   model weights neither on disk nor reachable
:class:`MissingDependency`  2          501   an optional package is not installed
:class:`OutputError`        3          500   an output cannot be written (permission, disk
                                             full): the work done so far is kept
:class:`ImageError`         (record)   422   one input is not a usable image
:class:`PathRefused`        2          403   a path outside the folder it must stay in
:class:`NotFound`           2          404   a job, file or thing that does not exist
:class:`QueueFull`          (service)  429   the service's queue is full; retry later
:class:`ShuttingDown`       (service)  503   the service is stopping
==========================  =========  ====  ================================================

The command line's exit codes (``factcap --help`` repeats them): 0 when every input got an
``ok`` record, 1 when some inputs failed or there was nothing to do, 2 for a usage or
configuration mistake, 3 when an output could not be written, 130 when interrupted.

>>> err = ConfigError("batch_size must be at least 1")
>>> isinstance(err, FactcapError), err.exit_code, err.http_status
(True, 2, 422)
"""

from __future__ import annotations

import importlib.util

#: Exit codes of the ``factcap`` command (see the module docstring).
EXIT_OK = 0
EXIT_ITEMS_FAILED = 1
EXIT_USAGE = 2
EXIT_OUTPUT = 3
EXIT_INTERRUPTED = 130


class FactcapError(Exception):
    """Base class: something a person can read and act on."""

    exit_code: int = EXIT_USAGE
    http_status: int = 400


class UsageError(FactcapError):
    """A bad command-line option or request field."""


class ConfigError(FactcapError):
    """The config file or an option's value is invalid."""

    http_status = 422


class DataError(FactcapError):
    """An input, manifest or results file does not hold what it should."""

    http_status = 422


class ModelNotAvailable(FactcapError):
    """A model's weights are neither on disk nor reachable."""

    http_status = 503


class MissingDependency(FactcapError):
    """An optional package is needed for this feature; the message says what to install."""

    http_status = 501


class OutputError(FactcapError):
    """An output cannot be written (permission denied, disk full, not a directory)."""

    exit_code = EXIT_OUTPUT
    http_status = 500


class PathRefused(FactcapError):
    """A path resolves outside the folder it must stay inside."""

    http_status = 403


class NotFound(FactcapError):
    """The named job, file or thing does not exist."""

    http_status = 404


class QueueFull(FactcapError):
    """The service's bounded queue is full: retry later."""

    http_status = 429


class ShuttingDown(FactcapError):
    """The service is stopping and takes no new work (or cancelled queued work)."""

    http_status = 503


class ImageError(FactcapError):
    """An input could not be decoded into an image; ``kind`` is the record's error type."""

    http_status = 422

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # crosses to and from processes
        return type(self), (self.kind, str(self))


def require(module: str, extra: str) -> None:
    """Raise :class:`MissingDependency` with a pip hint when ``module`` is not importable.

    >>> require("json", "core")  # present: returns quietly
    >>> require("no_such_module_xyz", "3d")
    Traceback (most recent call last):
    factcap.errors.MissingDependency: this feature needs the 'no_such_module_xyz' package: pip install 'factcap[3d]'
    """
    if importlib.util.find_spec(module) is None:
        raise MissingDependency(
            f"this feature needs the '{module}' package: pip install 'factcap[{extra}]'"
        )
