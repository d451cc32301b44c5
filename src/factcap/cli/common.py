"""What every ``factcap`` command shares: where models come from, quiet libraries, output
checks and the progress bar. Nothing here imports torch."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from factcap.errors import UsageError

FORMATTER = argparse.RawDescriptionHelpFormatter


def add_model_source(
    parser: argparse.ArgumentParser, preset_help: str = "tiny (default), small, vfc, api or shapes"
) -> None:
    """``--preset`` or ``--config``: where a command's models come from."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--preset", help=preset_help)
    group.add_argument("--config", type=Path, help="YAML config file (may name a preset)")


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: replace an existing output (never the command's own input)."""
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def add_image_root(parser: argparse.ArgumentParser) -> None:
    """``--image-root``: where relative image paths of a results file start."""
    parser.add_argument(
        "--image-root",
        type=Path,
        help="folder that relative image paths in RESULTS are relative to (default: where the "
        "captioning ran, then beside RESULTS, then the current folder)",
    )


def check_image_root(args: argparse.Namespace) -> None:
    """A usage error when ``--image-root`` names no folder."""
    if args.image_root is not None and not args.image_root.is_dir():
        raise UsageError(f"--image-root {args.image_root} is not a folder")


def load_config(args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> Any:
    """The config of ``--preset`` / ``--config`` with ``overrides`` on top."""
    from factcap.config import load_config as load

    return load(path=args.config, preset=args.preset, overrides=overrides)


def positive(name: str, value: int | None) -> int | None:
    """``value``, or a usage error when it is given and below 1."""
    if value is not None and value < 1:
        raise UsageError(f"{name} must be at least 1, not {value}")
    return value


def check_new_output(output: Path, inputs: list[Path], overwrite: bool) -> None:
    """Refuse to write ``output`` over one of ``inputs``, over an existing file without
    ``overwrite``, or where it cannot be written; all before any model loads."""
    from factcap.engine.job import check_writable, has_output, refuse_input_as_output

    refuse_input_as_output(inputs, output)
    if has_output(output) and not overwrite:
        raise UsageError(f"{output} exists: pass --overwrite to replace it")
    check_writable(output, folder=False)


def quiet_libraries() -> None:
    """Keep the terminal for factcap's own progress bar: no per-checkpoint bars or advisories
    from transformers / diffusers / huggingface_hub (a user's explicit settings win)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # Pillow warns about odd-but-decodable files; the record's status says what matters.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
    transformers = sys.modules.get("transformers")  # it reads the settings when imported
    if transformers is not None:
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
