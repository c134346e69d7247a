"""What talks to services outside the run: experiment trackers (``tracking``), the Hugging Face Hub (``hub``), and
the scrubbing of paths and secrets from what leaves the machine (``scrub``)."""
