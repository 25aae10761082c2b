"""One module per seed paper: ``PAPER = Paper(...)`` and the paper's claims (``@claim``).

Modules here import components (``gradlab.optim`` ...) at the top; optional heavy dependencies (diffusers,
captum) are imported inside claim functions so that ``gradlab list`` works with the core install.
"""
