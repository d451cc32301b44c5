"""Settings for every test and doctest: never reach a model hub; tiny checkpoints are built
once per session into a temporary cache (unless FACTCAP_CACHE already points somewhere)."""

from __future__ import annotations

import atexit
import doctest
import functools
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # the Ray instances tests start report nothing
# The suite's expectations are CPU float32 ones (tiny random weights, exact equality between
# runs), and models left on "auto" would take a GPU, in float16: the tests (and the processes
# they start) see no CUDA device unless FACTCAP_TEST_GPU=1, which runs the `gpu` tests on one.
if os.environ.get("FACTCAP_TEST_GPU") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
# Likewise "auto" on a CPU with native bf16 (avx512_bf16, amx_bf16) would load bfloat16: the
# suite runs as on a CPU without it, so CI machines agree; tests that need it inject the flags.
os.environ["FACTCAP_CPU_BF16"] = "0"
# Property tests draw the same examples on every run, so a red run is never luck of the draw;
# HYPOTHESIS_PROFILE=explore draws new ones (e.g. while working on the fallback chunker).
try:
    from hypothesis import settings as _hypothesis

    _hypothesis.register_profile("repeatable", derandomize=True, database=None)
    _hypothesis.register_profile("explore", derandomize=False)
    _hypothesis.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
except ImportError:  # hypothesis is a dev dependency; without it those tests are not collected
    pass
if "FACTCAP_CACHE" not in os.environ:
    os.environ["FACTCAP_CACHE"] = tempfile.mkdtemp(prefix="factcap-test-cache-")
    atexit.register(shutil.rmtree, os.environ["FACTCAP_CACHE"], ignore_errors=True)


#: Modules of src/factcap whose doctests were not collected: an optional dependency is missing.
_NOT_COLLECTED: list[str] = []
_PACKAGE = Path(__file__).resolve().parent / "src" / "factcap"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave out (and list at the end) the doctests of a factcap module that needs an optional
    dependency this environment lacks (e.g. ``factcap.serve.app`` without fastapi), instead of
    failing the collection; any other import error still fails it."""
    path = collection_path.resolve()
    if path.suffix != ".py" or path.name == "__main__.py" or _PACKAGE not in path.parents:
        return None
    parts = path.relative_to(_PACKAGE.parent).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if missing and missing != "factcap":
            _NOT_COLLECTED.append(f"{name} (needs {missing})")
            return True
    except Exception:
        return None  # the collection imports it again and reports the error
    return None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _NOT_COLLECTED:
        terminalreporter.write_line(
            f"doctests not collected, optional dependency missing: {', '.join(_NOT_COLLECTED)}"
        )


#: What makes the probe's offscreen renderer, as factcap does (EGL unless the user chose).
_GL_PROBE = (
    "import os; os.environ.setdefault('PYOPENGL_PLATFORM', 'egl'); import pyrender; "
    "pyrender.OffscreenRenderer(8, 8).delete()"
)
#: What scripts/setup.sh installs for it (as root or with passwordless sudo).
GL_PACKAGES = "libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri"


@functools.cache
def headless_gl_problem() -> str | None:
    """Why pyrender cannot render offscreen on this machine, or None when it can. Found once
    per session, in a subprocess: a GL library that is missing or broken can take the
    process down with it."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _GL_PROBE], capture_output=True, text=True, timeout=300
        )
    except subprocess.TimeoutExpired:
        return "making a pyrender offscreen renderer did not finish in 300 s"
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines()
    why = lines[-1] if lines else f"exit status {done.returncode}"
    return (
        f"no headless OpenGL here (a pyrender offscreen renderer fails: {why}); 3D assets "
        f"render through Mesa's EGL: apt-get install {GL_PACKAGES} (scripts/setup.sh does, "
        "as root or with passwordless sudo)"
    )


@pytest.fixture(scope="session")
def headless_gl() -> None:
    """Skips the test, saying why, on a machine where 3D assets cannot be rendered."""
    problem = headless_gl_problem()
    if problem:
        pytest.skip(problem)


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests in a browser are ``slow`` (not the fast tier); tests marked ``gpu`` skip, saying
    why, where torch sees no CUDA device."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return
    try:
        import torch

        reason = None if torch.cuda.is_available() else "torch sees no CUDA device"
    except ImportError:
        reason = "torch is not installed"
    if reason and os.environ.get("FACTCAP_TEST_GPU") != "1":
        reason += " (the tests hide any unless FACTCAP_TEST_GPU=1)"
    if reason:
        for item in gpu:
            item.add_marker(pytest.mark.skip(reason=f"needs a CUDA device: {reason}"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """A doctest whose example needs an optional dependency this environment lacks, or renders
    a 3D asset on a machine without headless OpenGL, skips and says so instead of failing."""
    try:
        return (yield)
    except doctest.UnexpectedException as e:
        error = e.exc_info[1]
        if isinstance(item, pytest.DoctestItem) and isinstance(error, ModuleNotFoundError):
            missing = (error.name or "").split(".")[0]
            if missing and missing != "factcap":
                pytest.skip(f"this example needs {missing}, which is not installed")
        if isinstance(item, pytest.DoctestItem) and getattr(error, "kind", None) == "RenderFailed":
            problem = headless_gl_problem()
            if problem:
                pytest.skip(f"this example renders a 3D asset: {problem}")
        raise
