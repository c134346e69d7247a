"""Method stage: how the pretrained weights are fine-tuned (conf/method/). ``apply`` is the one code path."""

from __future__ import annotations

from pipeline.errors import ConfigError

METHODS = ("full",)


def apply(mcfg, model, family, task):
    """Return the model prepared for training with method ``mcfg.name``."""
    if mcfg.name not in METHODS:
        raise ConfigError(f"method={mcfg.name} is not available; use one of {list(METHODS)}")
    return model


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
