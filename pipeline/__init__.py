"""Hydra-configured fine-tuning pipeline for the HuggingFace ecosystem.

Layers, each a subpackage, importing only the ones before it (tests/test_structure.py enforces it):
``errors`` / ``util`` -> ``config`` (typed schema) -> ``metrics``, ``families`` -> ``infra`` (processes, run
directory, resume, cluster, sweeps) -> ``integrations`` (trackers, Hub, scrubbing) -> ``data`` -> ``tasks`` ->
``models`` -> ``training`` -> ``rlhf`` -> ``reports`` -> ``stages`` (the run: check -> data -> model -> method ->
train -> evaluate -> rlhf -> report -> publish) -> ``commands`` (the console scripts; ``python -m pipeline``).
"""

__version__ = "0.1.0"
