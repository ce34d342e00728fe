"""``python -m corral.localmesos``: see ``corral.localmesos.cli``."""

import sys

from corral.localmesos.cli import main

sys.exit(main())
