"""``python -m gradlab``: the same command line as the ``gradlab`` script."""

import sys

from gradlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
