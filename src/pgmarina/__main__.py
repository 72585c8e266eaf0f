"""``python -m pgmarina``: the ``pgmarina`` command, for when it is not on PATH."""

import sys

from .cli import main

sys.exit(main())
