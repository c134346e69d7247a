"""Import-time chatter of optional libraries, kept off the console.

Where they are installed, three libraries print at import or first use, before the run says anything, and unrelated
to it (seen on CPU machines with torchao 0.18 and DeepSpeed 0.19 beside torch 2.13; docs/library-notes.md):
- ``torchao`` (imported by transformers' quantizer registry, which peft loads): "Failed to load ..._C_mxfp8...so"
  for each CUDA-only kernel library, and "Detected no triton" from ``torchao.kernel.intmm``;
- ``torch.utils._pytree``: "<enum 'KernelPreference'> is an Enum subclass ... register_constant() ... deprecated",
  once per torchao enum;
- ``DeepSpeed`` (imported by accelerate's utils): "Setting accelerator to CPU ...", on stdout.
They broke the one-line errors and quiet mode's single ``done:`` line. Records below ERROR from these loggers are
dropped; errors still show. ``FINETUNE_LIBRARY_WARNINGS=1`` keeps everything.
"""

from __future__ import annotations

import logging
import os

# Logger names as the libraries create them (no library lists its own import noise).
NOISY = ("torchao", "torch.utils._pytree", "DeepSpeed")


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def quiet_library_noise() -> None:
    """Drop below-ERROR records of the loggers in NOISY. A filter, not a level: DeepSpeed sets its logger's level
    when it is imported (after this runs) and a filter on the same logger object survives that; child loggers
    (``torchao.kernel.intmm``) pass through their parent's level, hence the level on ``torchao`` too."""
    if os.environ.get("FINETUNE_LIBRARY_WARNINGS") == "1":
        return
    for name in NOISY:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ErrorsOnly) for f in logger.filters):
            logger.addFilter(_ErrorsOnly())
    logging.getLogger("torchao").setLevel(logging.ERROR)
