"""Hydra launchers for finetune sweeps: ``hydra/launcher=submitit_slurm`` and ``submitit_local``
(conf/hydra/launcher/). Hydra's submitit launcher plugin (hydra-submitit-launcher) with what the pipeline needs:

- jobs with several tasks (``tasks_per_node`` x ``nodes``) start their ranks like torchrun would (RANK, WORLD_SIZE,
  MASTER_ADDR... from submitit's job environment), so one run directory is shared and rank 0 writes;
- preemption / time-out: the job saves a checkpoint at the end of the current step, and the resubmission that
  submitit requeues carries ``resume=auto`` when a complete checkpoint exists (pipeline/infra/cluster.py): the same run
  directory, continued explicitly; a job with no checkpoint yet starts fresh;
- the sweep directory is fixed once (a requeued job resolves no new timestamp), and ``launch`` waits for every job
  before it returns, so the end-of-sweep report sees them all; a job that died without a result is logged and
  counted (pipeline/infra/sweep.py), not raised, so the other jobs' results and the report still come.

Plugin discovery imports this module at every start: only light imports here (submitit and the pipeline's job-side
modules load inside the methods).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from hydra.core.utils import JobReturn, JobStatus

try:
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher as _upstream
except ImportError:  # the cluster extra is not installed: pipeline/infra/sweep.py says how to install it
    _upstream = None

log = logging.getLogger(__name__)


def _resume_key(override: str) -> bool:
    return override.split("=", 1)[0].lstrip("+~") == "resume"


if _upstream is not None:

    class _FinetuneSubmitit(_upstream.BaseSubmititLauncher):
        _run_dir: str | None = None  # this job's run directory (set in the job process)

        def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str,
                     singleton_state: dict) -> JobReturn:
            import submitit
            from hydra.core.singleton import Singleton
            from hydra.core.utils import run_job, setup_globals
            from omegaconf import open_dict

            from pipeline.infra import cluster
            from pipeline.infra import distributed
            from pipeline.infra.sweep import quiet_schema_notice

            quiet_schema_notice()
            ranks = cluster.job_environment()  # several tasks: RANK / WORLD_SIZE / MASTER_* as torchrun sets them
            overrides = list(sweep_overrides)
            if ranks["world_size"] > 1:
                distributed.before_hydra()  # process group (gloo + NCCL on GPUs)
                if ranks["rank"] > 0:
                    overrides += distributed.QUIET_RANK_OVERRIDES  # rank 0 logs and writes .hydra/ for the run
            Singleton.set_state(singleton_state)
            setup_globals()
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with open_dict(sweep_config.hydra.job) as job:
                job.id = submitit.JobEnvironment().job_id
                job.num = job_num
            self._run_dir = str(Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir))
            try:
                return run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                               config=sweep_config, job_dir_key=job_dir_key, job_subdir_key="hydra.sweep.subdir")
            finally:
                distributed.shutdown()

        def checkpoint(self, sweep_overrides: list[str], *args: Any, **kwargs: Any) -> Any:
            """submitit's resubmission on preemption / time-out: the same job, plus ``resume=auto`` when its run
            directory holds a complete checkpoint (the one pipeline/infra/cluster.py has just saved)."""
            import submitit

            from pipeline.infra.resume import newest_complete

            overrides = list(sweep_overrides)
            if self._run_dir and newest_complete(Path(self._run_dir)) and not any(map(_resume_key, overrides)):
                overrides.append("resume=auto")
            return submitit.helpers.DelayedSubmission(self, overrides, *args, **kwargs)

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            from omegaconf import open_dict, read_write

            from pipeline.infra import sweep

            with read_write(self.config.hydra), open_dict(self.config.hydra):
                # ${now:...} resolved once: a requeued job must find the same sweep (and so run) directory
                self.config.hydra.sweep.dir = str(self.config.hydra.sweep.dir)
            jobs = self._submit(job_overrides, initial_job_idx)
            returns = []
            for num, (overrides, job) in enumerate(zip(job_overrides, jobs), start=initial_job_idx):
                try:
                    returns.append(job.results()[0])
                except Exception as e:  # the job's process ended without a result (killed, not requeued...)
                    log.error("sweep job #%d (%s) ended without a result: %s; its log: %s", num,
                              " ".join(overrides), str(e).strip().splitlines()[-1] if str(e).strip() else
                              type(e).__name__, job.paths.stderr)
                    sweep.LAUNCH_FAILURES.append(f"#{num} {' '.join(overrides)}")
                    returns.append(JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED,
                                             _return_value=None))
            return returns

        def executor(self):
            """The submitit executor this launcher's config describes (the upstream launcher's mapping: shared keys
            as they are, the others prefixed with the cluster name)."""
            import submitit
            from omegaconf import OmegaConf

            params = dict(self.params)
            init_keys = {"submitit_folder", "max_num_timeout"}
            init = {"folder": params["submitit_folder"]}
            if "max_num_timeout" in params:
                init[f"{self._EXECUTOR}_max_num_timeout"] = params["max_num_timeout"]
            executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
            base = set(OmegaConf.structured(_upstream.BaseQueueConf).keys())
            executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v
                                          for k, v in params.items() if k not in init_keys})
            return executor

        def _submit(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
            """Submit every job (one array job on SLURM) without waiting."""
            from hydra.core.singleton import Singleton
            from hydra.core.utils import filter_overrides

            executor = self.executor()
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            log.info("submitit '%s' sweep output dir: %s", self._EXECUTOR, sweep_dir)
            job_params = []
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
                job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                                   Singleton.get_state()))
            return executor.map_array(self, *zip(*job_params))

    class LocalLauncher(_FinetuneSubmitit):
        _EXECUTOR = "local"

    class SlurmLauncher(_FinetuneSubmitit):
        _EXECUTOR = "slurm"
