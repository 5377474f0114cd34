"""Allow ``python -m mmbilevel``."""

import sys

from mmbilevel.cli import main

sys.exit(main())
