"""``python -m robustlens`` (and ``torchrun -m robustlens``): the command line."""

from __future__ import annotations

import sys

from robustlens.cli import main

if __name__ == "__main__":
    sys.exit(main())
