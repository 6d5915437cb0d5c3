"""``python -m sepcluster ...``: the same as the ``sepcluster`` command."""

import sys

from sepcluster.cli import main

if __name__ == "__main__":
    sys.exit(main())
