"""Settings for every test and doctest: never reach a model hub; tiny checkpoints are built
once per session into a temporary cache (unless FACTCAP_CACHE already points somewhere)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
if "FACTCAP_CACHE" not in os.environ:
    os.environ["FACTCAP_CACHE"] = tempfile.mkdtemp(prefix="factcap-test-cache-")
    atexit.register(shutil.rmtree, os.environ["FACTCAP_CACHE"], ignore_errors=True)
