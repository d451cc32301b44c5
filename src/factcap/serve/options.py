"""The service's options, checked before any model loads (``factcap serve``)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from factcap.access import check_exposure, host_patterns
from factcap.errors import UsageError


@dataclass(frozen=True)
class ServeOptions:
    """Where and how ``factcap serve`` listens, and what it allows.

    :meth:`checked` says in one line what is wrong with an option (exit 2 on the command
    line), before the models load.

    Example:
        >>> ServeOptions(port=99999).checked()
        Traceback (most recent call last):
        factcap.errors.UsageError: --port must be from 1 to 65535, not 99999
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_upload_mb: float = 20.0
    queue_size: int = 64
    data_root: Path | None = None
    jobs_dir: Path | None = None
    #: hosts whose http(s) image URLs the chat route fetches (empty: URLs are refused)
    image_url_hosts: tuple[str, ...] = ()

    def checked(self) -> ServeOptions:
        """These options, checked (and the folders resolved); raises :class:`UsageError`."""
        if not 1 <= self.port <= 65535:
            raise UsageError(f"--port must be from 1 to 65535, not {self.port}")
        if self.queue_size < 1:
            raise UsageError(f"--queue-size must be at least 1, not {self.queue_size}")
        if not self.max_upload_mb > 0:
            raise UsageError(f"--max-upload-mb must be above 0, not {self.max_upload_mb:g}")
        check_exposure(self.host, self.api_key)
        hosts = host_patterns(self.image_url_hosts)
        root, jobs = self.data_root, self.jobs_dir
        if root is not None:
            if not root.is_dir():
                raise UsageError(f"--data-root {root} is not an existing folder")
            root = root.resolve()
        if jobs is not None:
            if root is None:
                raise UsageError("--jobs-dir needs --data-root (dataset jobs are off without it)")
            if jobs.exists() and not jobs.is_dir():
                raise UsageError(f"--jobs-dir {jobs} exists and is not a folder")
            try:
                jobs.mkdir(parents=True, exist_ok=True)
                fd, probe = tempfile.mkstemp(prefix=".factcap-probe-", dir=jobs)
                os.close(fd)
                os.unlink(probe)
            except OSError as err:
                raise UsageError(f"--jobs-dir {jobs} cannot be written: {err.strerror}") from None
            jobs = jobs.resolve()
        return replace(self, data_root=root, jobs_dir=jobs, image_url_hosts=hosts)
