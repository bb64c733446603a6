"""``python -m raysync``: the same command line as the ``raysync`` console script."""

from __future__ import annotations

import sys

from raysync.cli import main

if __name__ == "__main__":
    sys.exit(main())
