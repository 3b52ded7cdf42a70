"""``python -m dreamrate``: the same as the ``dreamrate`` command."""

import sys

from dreamrate.cli import main

sys.exit(main())
