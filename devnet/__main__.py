"""``python -m devnet --port N``: see ``devnet/cli.py``."""

import sys

from devnet.cli import main

sys.exit(main())
