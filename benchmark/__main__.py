"""``python -m benchmark``: the clipbench command line (same as the ``clipbench`` script)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
