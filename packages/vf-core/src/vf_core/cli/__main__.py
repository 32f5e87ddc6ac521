"""``python -m vf_core.cli``: the ``vectorfit`` command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
