"""``hydra/sweeper=optuna``: an Optuna study over finetune runs (conf/hydra/sweeper/optuna.yaml, conf/search/).

Hydra's own plugin (hydra-optuna-sweeper 1.3.0) pins optuna<3, whose SQLite storage fails under SQLAlchemy 2 and
whose parameter importances fail under NumPy 2; this is a thin sweeper over current Optuna with the same config keys
(``n_trials``, ``direction``, ``storage``, ``study_name``, ``params``, ``sampler``, ``n_jobs``,
``max_failure_rate``) and the same search-space syntax (``interval(a, b)``, ``tag(log, interval(a, b))``,
``range(a, b)``, ``choice(...)``). Differences, each for the pipeline's sake:

- ``direction: auto`` takes the task's (``task.greater_is_better``): the objective is the run's validation metric
  (``eval_<task.metric>``, returned by cli._app), never a test metric;
- ``n_trials`` is the size of the study, not of this invocation: running the same command again after an
  interruption runs only the missing trials (trials left running by the interruption are marked failed and do not
  count); raise ``n_trials`` to extend a finished study. The study lives in SQLite in the sweep directory, so give
  the same ``hydra.sweep.dir`` to continue;
- trial N runs as job N (``hydra.job.num``), so its run directory is ``<sweep dir>/N-...``; each trial keeps its run
  directory as a user attribute;
- at the end ``optuna.json`` (every trial, the best one with its run directory, parameter importances) and
  ``optimization_results.yaml`` (the upstream plugin's file) are written to the sweep directory, before the sweep's
  comparison report, which shows them.

Plugin discovery imports this module at every start: optuna is imported inside the methods.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from hydra.plugins.sweeper import Sweeper

log = logging.getLogger(__name__)
RESULTS = "optuna.json"


def _flatten(params, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in (params or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) or hasattr(v, "items"):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def distribution(override) -> Any:
    """An Optuna distribution for a sweep override (interval / tag(log, interval) / range / choice), else the fixed
    value as a string."""
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():  # range(start, stop[, step]): stop excluded, as in Python
        if any(isinstance(x, float) for x in (value.start, value.stop, value.step)):
            n = int(round((value.stop - value.start) / value.step))
            return FloatDistribution(value.start, value.start + (n - 1) * value.step, step=value.step)
        return IntDistribution(int(value.start), int(value.stop) - int(value.step), step=int(value.step))
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ValueError(f"{override.input_line}: not a search space Optuna takes (interval, range, choice)")


def search_space(overrides: list[str]) -> tuple[dict, dict]:
    """({name: distribution}, {name: fixed value}) from override strings."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    space, fixed = {}, {}
    for o in OverridesParser.create().parse_overrides(overrides):
        d = distribution(o)
        (fixed if isinstance(d, str) else space)[o.get_key_element()] = d
    return space, fixed


class OptunaSweeper(Sweeper):
    def __init__(self, sampler: Any, direction: Any, storage: str | None, study_name: str | None, n_trials: int,
                 n_jobs: int = 1, max_failure_rate: float = 0.5, params: Any = None) -> None:
        self.sampler, self.direction, self.storage, self.study_name = sampler, direction, storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = int(n_trials), max(1, int(n_jobs)), max_failure_rate
        self.params = _flatten(params)
        self.config = self.launcher = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    def _direction(self) -> str:
        task = self.config.get("task") or {}
        task_dir = "maximize" if task.get("greater_is_better", True) else "minimize"
        wanted = str(self.direction)
        if wanted in ("auto", "None", ""):
            return task_dir
        if wanted not in ("maximize", "minimize"):
            raise ValueError(f"hydra.sweeper.direction={wanted}: use auto, maximize or minimize")
        if wanted != task_dir:
            raise ValueError(f"hydra.sweeper.direction={wanted}, but the objective eval_{task.get('metric')} is "
                             f"{task_dir}d (task.greater_is_better={task.get('greater_is_better')}); use "
                             f"direction=auto")
        return wanted

    def sweep(self, arguments: list[str]) -> None:
        import optuna
        space, fixed = search_space([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        for name in space.keys() & fixed.keys():
            del space[name]  # a value on the command line fixes a parameter of the search config
        if not space:
            raise ValueError("hydra/sweeper=optuna: nothing to search; give hydra.sweeper.params (a search=... "
                             "config) or overrides such as 'trainer.learning_rate=tag(log,interval(1e-5,1e-3))'")
        if any(k == "task" or k.startswith("task.") or k.startswith("recipe") for k in space):
            raise ValueError("hydra/sweeper=optuna: one study searches one task (the objective's metric and "
                             "direction come from it); search task or recipe in separate studies")
        direction = self._direction()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(storage=self.storage, study_name=self.study_name, direction=direction,
                                    load_if_exists=True)
        study.sampler = self._sampler(len(study.trials))
        if study.direction.name.lower() != direction:
            raise ValueError(f"study {study.study_name} in {self.storage} is {study.direction.name.lower()}d; this "
                             f"objective is {direction}d: use another study_name or hydra.sweep.dir")
        self._close_interrupted(study)
        done = sum("outcome" in t.user_attrs for t in study.trials)
        log.info("Optuna study %s (%s, %s): %d of %d trials done; objective eval_%s (%s); space: %s",
                 study.study_name, self.storage, type(study.sampler).__name__, done, self.n_trials,
                 self.config.task.metric, direction, {k: repr(v) for k, v in space.items()})
        failed = finished = 0
        try:
            while done < self.n_trials:
                trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - done))]
                jobs = [[f"{k}={v}" for k, v in fixed.items()] + [f"{k}={v}" for k, v in t.params.items()]
                        for t in trials]
                returns = self.launcher.launch(jobs, initial_job_idx=trials[0].number)
                for trial, ret in zip(trials, returns):
                    failed += not self._tell(study, trial, ret)
                finished += len(trials)
                done += len(trials)
                if failed and failed / finished > self.max_failure_rate:
                    log.error("Optuna: %d of %d trials failed (max_failure_rate=%s): search stopped; each error is "
                              "in its run's status.json", failed, finished, self.max_failure_rate)
                    break
        finally:
            self._write_results(study, sweep_dir)

    def _sampler(self, done: int):
        """The configured sampler; a continued study's seeded sampler is seeded past the trials it holds (the same
        seed again would draw the first invocation's random trials again)."""
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        if not self.sampler:
            return None
        conf = OmegaConf.to_container(self.sampler, resolve=True) if OmegaConf.is_config(self.sampler) \
            else dict(self.sampler)
        if done and conf.get("seed") is not None:
            conf["seed"] = int(conf["seed"]) + done
        return instantiate(conf)

    @staticmethod
    def _close_interrupted(study) -> None:
        from optuna.trial import TrialState

        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            log.warning("Optuna: trial %d was left running by an interrupted search; marked failed (not counted)",
                        t.number)
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)

    @staticmethod
    def _tell(study, trial, ret) -> bool:
        from optuna.trial import TrialState

        try:
            value = ret.return_value
        except Exception as e:  # the job raised (basic launcher with debug_errors=true)
            log.warning("Optuna: trial %d failed: %s", trial.number, e)
            value = None
        hydra_cfg = getattr(ret, "hydra_cfg", None)
        run_dir = str(hydra_cfg.hydra.runtime.output_dir) if hydra_cfg is not None else None
        trial.set_user_attr("run_dir", run_dir)
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        trial.set_user_attr("outcome", "completed" if ok else "failed")
        if ok:
            study.tell(trial, float(value))
        else:
            log.warning("Optuna: trial %d (%s) gave no validation metric; marked failed", trial.number, run_dir)
            study.tell(trial, state=TrialState.FAIL)
        return ok

    def _write_results(self, study, sweep_dir: Path) -> None:
        from omegaconf import OmegaConf
        from optuna.trial import TrialState

        from pipeline.util.paths import write_json_atomic

        trials = [{"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
                   "run_dir": t.user_attrs.get("run_dir"),
                   "seconds": t.duration.total_seconds() if t.duration else None} for t in study.trials]
        complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
        best = study.best_trial if complete else None
        importances = None
        if len(complete) >= 2:
            try:
                import optuna

                importances = optuna.importance.get_param_importances(study)
            except Exception as e:  # e.g. a parameter that never varied
                log.info("Optuna: no parameter importances (%s: %s)", type(e).__name__, e)
        results = {"study_name": study.study_name, "storage": self.storage,
                   "direction": study.direction.name.lower(), "objective": f"eval_{self.config.task.metric}",
                   "n_trials": self.n_trials, "trials": trials, "importances": importances,
                   "best": None if best is None else {"number": best.number, "value": best.value,
                                                      "params": best.params,
                                                      "run_dir": best.user_attrs.get("run_dir")}}
        write_json_atomic(sweep_dir / RESULTS, results)
        if best is not None:
            OmegaConf.save(OmegaConf.create({"name": "optuna", "best_params": best.params, "best_value": best.value}),
                           sweep_dir / "optimization_results.yaml")
            log.info("Optuna best: trial %d, eval_%s=%.4f, %s (%s)", best.number, self.config.task.metric,
                     best.value, best.params, best.user_attrs.get("run_dir"))
