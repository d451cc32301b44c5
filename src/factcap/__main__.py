"""``python -m factcap``: the same as the ``factcap`` command."""

from factcap.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
