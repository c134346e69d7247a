"""Where and how a run runs: processes (``distributed``: rank, world size, one run directory for all ranks, launcher
checks), the run directory (``rundir``: writable, one run at a time, status.json), resuming from checkpoints
(``resume``), cluster jobs (``cluster``: SLURM preemption -> checkpoint -> requeue) and sweeps (``sweep``)."""
