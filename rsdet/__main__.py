"""``python -m rsdet ...`` = the ``rsdet`` command (e.g. ``torchrun --nproc_per_node=4 -m rsdet train ...``)."""

import sys

from rsdet.cli import main

if __name__ == "__main__":
    sys.exit(main())
