"""The console scripts, one module each: ``finetune`` (``finetune``; also ``python -m pipeline``), ``rlhf``
(``finetune-rlhf``), ``predict`` (``finetune-predict``), ``compare`` (``finetune-compare``), ``export``
(``finetune-export``); ``app`` is the Hydra app wrapper the first two share, ``help`` the fast ``finetune --help``.
Every command turns a ``PipelineError`` into one line on stderr and its exit code (``one_line_errors``, here so that
the argparse commands need nothing heavier to use it).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

from pipeline.errors import PipelineError
from pipeline.util.noise import quiet_library_noise

# before any command imports torch / transformers / accelerate (pipeline/util/noise.py says what they print)
quiet_library_noise()


@contextmanager
def one_line_errors():
    """A ``PipelineError`` raised inside becomes ``error: <message>`` on stderr and the error's exit code (2)."""
    try:
        yield
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
