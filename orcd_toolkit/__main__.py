"""``python -m orcd_toolkit`` is the ``orcd`` script."""

import sys

from orcd_toolkit.cli import main

sys.exit(main())
