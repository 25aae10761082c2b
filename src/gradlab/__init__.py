"""gradlab: gradient-based learning papers as tested components plus honest, reproducible claims.

Library code reports through the standard :mod:`logging` module under the ``"gradlab"`` logger (and its
children, ``"gradlab.claims.runner"`` ...), silent by default: a :class:`logging.NullHandler` is attached here, so
nothing is printed unless the application configures logging (``logging.basicConfig(level=logging.INFO)``, or
``gradlab --verbose`` / ``--debug`` on the command line).
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
