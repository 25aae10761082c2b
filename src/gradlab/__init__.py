"""gradlab: gradient-based learning papers as tested components plus honest, reproducible claims."""

__version__ = "0.1.0"
