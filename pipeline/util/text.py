"""Small text helpers shared across layers: shell escapes typed on a command line, and which key names hold
secrets."""

from __future__ import annotations

import re

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\", "0": "\0"}

# Keys whose values are secrets: never in the config (it is written to the run directory), never in a model card
# or a tracker's parameters (integrations/scrub.py).
SECRET_KEY = re.compile(r"(^|[._-])(token|password|passwd|secret|api_?key|credentials?|auth)([._-]|$)", re.I)


def unescape(value: str) -> str:
    """``\\t``, ``\\n``, ``\\r``, ``\\0`` and ``\\\\`` as the characters (other backslashes stay)."""
    return re.sub(r"\\([tnr0\\])", lambda m: _ESCAPES[m.group(1)], value)


def is_secret_key(key: str) -> bool:
    """A dotted key whose last part (or whole) is named like a token, password or secret."""
    return bool(SECRET_KEY.search(str(key).rsplit(".", 1)[-1])) or bool(SECRET_KEY.search(str(key)))
