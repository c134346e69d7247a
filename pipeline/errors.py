"""User-facing errors: each one becomes a single line on stderr and a non-zero exit (see cli.py)."""


class PipelineError(Exception):
    """Bad input or configuration. The message says what is wrong and how to fix it."""

    exit_code = 2


class ConfigError(PipelineError):
    """A config value, or a combination of values, that cannot work."""


class DataError(PipelineError):
    """A data file or dataset that cannot be read or is malformed."""


class ModelError(PipelineError):
    """A model path / id that cannot be loaded, or a model that cannot do the task."""
