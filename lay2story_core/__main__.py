"""``python -m lay2story_core``: see :mod:`lay2story_core.cli`."""

import sys

from .cli import main

sys.exit(main())
