"""Plumbing every layer may use: paths and the atomic writer (``paths``), small text helpers (``text``). Imports
nothing of the package but ``pipeline.errors``."""
