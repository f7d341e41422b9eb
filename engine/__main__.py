"""``python -m interestflow ...``: the ``interestflow`` command (``interestflow.cli``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
