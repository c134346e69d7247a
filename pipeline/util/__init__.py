"""Plumbing every layer may use: paths and the atomic writer (``paths``), small text helpers (``text``), the
optional libraries' import chatter kept off the console (``noise``). Imports
nothing of the package but ``pipeline.errors``."""
