"""Hydra plugins of finetune-pipeline: submitit launchers with preemption -> resume, an Optuna sweeper."""
