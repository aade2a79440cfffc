"""`python3 -m pgkeep_catalog`: the command line (see cli.py)."""

import sys

from .cli import main

sys.exit(main())
