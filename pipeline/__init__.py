"""Hydra-configured fine-tuning pipeline for the HuggingFace ecosystem.

Stages (one module each): data -> models -> methods -> train -> evaluation -> report.
Entry point: ``finetune`` / ``python -m pipeline`` (pipeline/cli.py).
"""

__version__ = "0.1.0"
