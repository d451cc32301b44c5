"""The ``factcap`` command line: a thin layer over the library, one module per command.

Heavy modules (pydantic models, torch, transformers) are imported inside the command
handlers, so ``factcap --help`` answers at once. Every error factcap raises on purpose is
printed as one line and exits with its code (:mod:`factcap.errors`): 0 all inputs ok, 1 some
failed or nothing to do, 2 a usage or configuration mistake, 3 an output that cannot be
written, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from factcap import __version__
from factcap.cli.common import FORMATTER, quiet_libraries

__all__ = ["main", "quiet_libraries"]

#: The command modules, in the order ``factcap --help`` lists them (each has ``add_parser``).
COMMANDS = (
    "caption",
    "evaluate",
    "report",
    "filter",
    "export",
    "serve",
    "models",
    "bench",
    "study",
)

EPILOG = """Run 'factcap COMMAND --help' for a command's options and examples.

exit status: 0 every input got an ok record; 1 some inputs failed, or there was nothing to
do; 2 a usage or configuration mistake; 3 an output could not be written; 130 interrupted."""


def parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    top = argparse.ArgumentParser(
        prog="factcap",
        description="Detailed image captions, fact-checked against the image.",
        epilog=EPILOG,
        formatter_class=FORMATTER,
    )
    top.add_argument("--version", action="version", version=f"factcap {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        import_module(f"factcap.cli.{name}").add_parser(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``factcap`` command; returns the exit status."""
    args = parser().parse_args(argv)
    if not getattr(args, "handler", None):
        parser().print_help()
        return 2
    from factcap.errors import EXIT_INTERRUPTED, FactcapError

    try:
        return args.handler(args)
    except FactcapError as err:
        print(f"factcap: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("factcap: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
