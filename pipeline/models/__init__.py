"""The model side of a run: tokenizer + model from a hub id, a folder or ``pkg://`` (``load``), tiny models built from
config (``scratch``), the fine-tuning method applied to them (``methods``: full, freeze, PEFT), the PEFT glue around
the Trainer (``peft_glue``), and a finished run's saved model (``saved``: load, merge an adapter)."""
