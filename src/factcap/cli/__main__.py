"""``python -m factcap.cli``: the ``factcap`` command."""

import sys

from factcap.cli import main

sys.exit(main())
