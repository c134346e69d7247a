"""Every recipe and group option composes; Hydra refuses unknown recipes and keys with its own message."""

from pathlib import Path

import pytest

from conftest import ROOT, compose, run_cli

RECIPES = sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))
MODELS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml") if p.stem != "base")


def test_recipes_exist():
    assert {"bert-ner", "gpt2-generation", "t5-summarization"} <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_composes(recipe):
    from pipeline.tasks import task_classes

    cfg = compose([f"recipe={recipe}"])
    assert cfg.name and cfg.task.name in task_classes()
    smoke = compose([f"recipe={recipe}", "debug=smoke"])
    assert smoke.model.init == "scratch" and smoke.model.name_or_path is None  # a tiny model of the recipe's family
    assert not any(smoke.data.get(k) for k in ("path", "train_file", "validation_file", "test_file"))  # generated


@pytest.mark.parametrize("model", MODELS)
def test_model_files_name_a_checkpoint_and_what_scratch_builds_not_its_family(model):
    from pipeline.families import get_family

    cfg = compose([f"model={model}"])
    assert cfg.model.family is None and cfg.model.trust_remote_code is False  # the checkpoint says its type
    assert get_family(cfg.model.scratch.model_type).name == cfg.model.scratch.model_type


def test_recipe_overrides_reach_the_config():
    cfg = compose(["recipe=t5-summarization", "model=t5-base", "trainer.learning_rate=1e-3"])
    assert cfg.model.name_or_path == "google-t5/t5-base" and cfg.trainer.learning_rate == 1e-3
    assert cfg.task.name == "summarization"


def test_cfg_job_prints_config_without_training(tmp_path):
    r = run_cli(["recipe=bert-ner", "--cfg", "job"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "name: bert-ner" in r.stdout and not (tmp_path / "outputs").exists()


def test_unknown_recipe_is_refused_in_one_line_with_the_options():
    r = run_cli(["recipe=nope", "--cfg", "job"])
    assert r.returncode == 2 and r.stderr.startswith("error: recipe=nope: no such recipe in conf/recipe/; options: ")


def test_unknown_key_is_refused_in_one_line():
    r = run_cli(["trainer.not_a_field=1", "--cfg", "job"])
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()] and "not_a_field" in r.stderr


# -- the config resolved once (pipeline/stages/resolve.py, pipeline/config/schema.py) ---------------------------------------------
def _resolve(overrides, **kw):
    from pipeline.stages.resolve import resolve

    return resolve(compose(overrides), **kw)


def _bad_values(field, metadata, hint):
    """(value, expected part of the message): out of range, not among the choices (and a type error for integers
    without a range)."""
    import typing

    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    base = typing.get_origin(args[0]) or args[0]
    out = []  # wrong types of every key: test_any_key_of_the_config_with_a_wrong_value_is_one_line_or_accepted
    if base is int and "min" not in metadata:
        out.append(("abc", "is not an integer"))
    if "choices" in metadata:
        out.append(("nope", "use one of"))
    for op, delta in (("min", -1), ("gt", 0)):
        if op in metadata and base in (int, float):
            out.append((metadata[op] + delta, "is out of range"))
    return out


def _schema_cases():
    """Every field of the pipeline's own schema with a wrong value, in the config that has that group."""
    import dataclasses
    import typing

    from pipeline.config import schema
    from pipeline.tasks import task_classes

    groups = [(schema.Root, "", ["debug=smoke"]), (schema.Model, "model.", ["debug=smoke"]),
              (schema.Data, "data.", ["debug=smoke"]), (schema.TrainerKeys, "trainer.", ["debug=smoke"]),
              (schema.MethodKeys, "method.", ["debug=smoke", "method=lora"]),
              (schema.Logger, "logger.", ["debug=smoke", "logger=wandb"]),
              (schema.Rlhf, "rlhf.", ["recipe=gpt2-rlhf", "debug=smoke"])]
    recipes = {"ner": "bert-ner", "generation": "gpt2-generation", "summarization": "t5-summarization"}
    for name, cls in task_classes().items():
        groups.append((cls.Config, "task.", [f"recipe={recipes.get(name, 'bert-ner')}", f"task={name}",
                                             "debug=smoke"] if name not in recipes else
                       [f"recipe={recipes[name]}", "debug=smoke"]))
    cases = []

    def walk(cls, prefix, base):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                walk(hint, f"{prefix}{f.name}.", base)
                continue
            for value, expected in _bad_values(f, dict(f.metadata), hint):
                cases.append((base, f"{prefix}{f.name}", value, expected))

    for cls, prefix, base in groups:
        walk(cls, prefix, base)
    return cases


SCHEMA_CASES = _schema_cases()


def test_schema_cases_cover_every_group():
    keys = {key.split(".")[0] if "." in key else "root" for _, key, _, _ in SCHEMA_CASES}
    assert {"root", "model", "data", "trainer", "method", "logger", "rlhf", "task"} <= keys
    assert len(SCHEMA_CASES) > 40


def test_every_own_key_with_a_wrong_value_is_one_line():
    """Each field of the pipeline's own schema (pipeline/config/schema.py and every task's Config), given a value of the
    wrong type, out of range, or not among its choices: resolve stops with one ConfigError line naming the key."""
    from omegaconf import OmegaConf

    from pipeline.stages.resolve import resolve
    from pipeline.errors import ConfigError

    bases, problems = {}, []
    for base, key, value, expected in SCHEMA_CASES:
        cfg = bases.setdefault(tuple(base), compose(base)).copy()
        if OmegaConf.select(cfg, key, default="<absent>") == "<absent>":
            continue  # not a key of this config (e.g. a task size the task does not have)
        OmegaConf.update(cfg, key, value, force_add=True)
        try:
            resolve(cfg)
            problems.append(f"{key}={value!r}: accepted")
        except ConfigError as e:
            msg = str(e)
            if "\n" in msg or key not in msg or expected not in msg:
                problems.append(f"{key}={value!r}: {msg!r} (wanted {expected!r})")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("method,key,values", [
    ("lora", "r", ("abc", 0, -3)), ("lora", "lora_alpha", ("abc", -3)), ("lora", "lora_dropout", ("x", 1.5, -0.1)),
    ("ia3", "target_modules", (5, 2.5)), ("prompt", "num_virtual_tokens", ("ten", 0)), ("vera", "r", ("abc", -1)),
    ("adalora", "init_r", ("abc", 0)), ("oft", "oft_block_size", ("abc",)), ("lora", "use_dora", ("maybe",)),
])
def test_peft_settings_of_the_wrong_type_are_one_line(method, key, values):
    """method.* keys go to the PEFT config class, which does not check types itself (LoraConfig(r='abc') builds):
    the pipeline checks them against the class's field types and ranges."""
    from pipeline.errors import ConfigError

    for value in values:
        with pytest.raises(ConfigError, match=rf"^method\.{key}=") as e:
            _resolve(["debug=smoke", f"method={method}", f"++method.{key}={value}"])
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("key,value,expected", [
    ("trainer.num_train_epochs", "abc", "is not a number"), ("trainer.eval_strategy", "sometimes", "IntervalStrategy"),
    ("trainer.per_device_eval_batch_size", 0, "out of range"), ("trainer.weight_decay", -1, "out of range"),
    ("trainer.logging_steps", 0, "out of range"), ("trainer.bf16", "sometimes", "true or false"),
    ("trainer.lr_scheduler_type", "wiggly", "SchedulerType"), ("trainer.save_total_limit", 0, "out of range"),
    ("trainer.max_grad_norm", "x", "is not a number"), ("trainer.dataloader_num_workers", -1, "out of range"),
])
def test_trainer_fields_of_the_wrong_kind_are_one_line(key, value, expected):
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=expected) as e:
        _resolve(["debug=smoke", f"{key}={value}"])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("override,expected", [
    ("rlhf.trainer.learning_rate=abc", "rlhf.trainer.learning_rate='abc' is not a number"),
    ("rlhf.reward.trainer.per_device_train_batch_size=0", "rlhf.reward.trainer.per_device_train_batch_size=0 is out"),
    ("rlhf.generation.num_generations=3", "must be >= 2 and divide"),
    ("rlhf.eval.max_new_tokens=0", "rlhf.eval.max_new_tokens=0 is out of range"),
    ("rlhf.max_prompt_length=abc", "rlhf.max_prompt_length='abc' is not an integer"),
    ("rlhf.data.prompt_template=no-prompt-here", "has no {prompt}"),
])
def test_rlhf_sizes_and_trl_settings_are_one_line(override, expected):
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        _resolve(["recipe=gpt2-rlhf", "debug=smoke", override])
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_generation_settings_are_checked():
    from pipeline.errors import ConfigError

    for override, expected in (("task.generation.top_p=2", "top_p=2 is out of range"),
                               ("task.generation.max_new_tokens=0", "max_new_tokens=0 is out of range"),
                               ("+task.generation.nucleus=0.9", "not a generation setting"),
                               ("task.generation.temperature=abc", "is not a number")):
        with pytest.raises(ConfigError, match=expected):
            _resolve(["recipe=gpt2-generation", "debug=smoke", override])


def test_escapes_typed_on_the_command_line_become_characters():
    """bash passes data.conll.separator='\\t' to Hydra as a backslash and a t; the resolved config holds a tab."""
    cfg = compose(["data.conll.separator=\\t"])
    assert cfg.data.conll.separator == "\\t"
    assert _resolve(["data.conll.separator=\\t"]).data.conll.separator == "\t"
    rl = _resolve(["recipe=gpt2-rlhf", "rlhf.data.response_marker=\\n\\nBot:"]).rlhf.data.response_marker
    assert rl == "\n\nBot:"


def test_tilde_in_paths_expands(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = _resolve(["data.train_file='~/data/train.jsonl'", "resume='~/runs/x/checkpoints/checkpoint-2'"])  # quoted: Hydra's grammar refuses a bare ~
    assert cfg.data.train_file == f"{tmp_path}/data/train.jsonl" and cfg.resume.startswith(str(tmp_path))


def test_local_files_win_over_the_recipe_hub_dataset():
    cfg = _resolve(["recipe=bert-ner", "data.train_file=train.conll", "data.validation_file=dev.conll",
                    "data.test_file=test.conll"])
    assert cfg.data.source == "conll" and cfg.data.path == "lhoestq/conll2003"  # path kept, not used
    assert _resolve(["recipe=t5-summarization", "data.train_file=my.jsonl"]).data.source == "json"
    assert _resolve(["recipe=bert-ner"]).data.source == "hub"


def test_resolved_config_is_read_only_and_resolving_twice_changes_nothing():
    from omegaconf.errors import ReadonlyConfigError

    cfg = _resolve(["recipe=bert-ner", "method=lora"])
    with pytest.raises(ReadonlyConfigError):
        cfg.trainer.learning_rate = 1.0
    from pipeline.stages.resolve import resolve

    assert resolve(cfg) is cfg


def test_finetune_and_finetune_rlhf_resolve_the_same_learning_rates():
    """One step derives the effective learning rates (x method.lr_scale) for both commands: a LoRA policy trains
    with the same rate whichever command runs the RLHF stage."""
    overrides = ["recipe=gpt2-rlhf", "method=lora", "debug=smoke"]
    a, b = _resolve(overrides), _resolve(overrides, stage="rlhf")
    scale = compose(overrides).method.lr_scale
    assert scale > 1
    assert a.rlhf.trainer.learning_rate == b.rlhf.trainer.learning_rate == pytest.approx(1e-5 * scale)
    assert a.rlhf.reward.trainer.learning_rate == b.rlhf.reward.trainer.learning_rate == pytest.approx(2e-5 * scale)
    assert a.trainer.learning_rate == pytest.approx(3e-3 * scale)
    from pipeline.rlhf.common import policy_config

    assert policy_config(a, Path("x")).learning_rate == policy_config(b, Path("x")).learning_rate


def test_batch_plan_and_auto_settings_are_resolved():
    cfg = _resolve(["debug=smoke", "trainer.global_batch_size=64", "trainer.per_device_train_batch_size=16",
                    "trainer.dataloader_pin_memory=auto", "trainer.tf32=auto"])  # one process here
    assert (cfg.trainer.per_device_train_batch_size, cfg.trainer.gradient_accumulation_steps) == (16, 4)
    assert cfg.trainer.dataloader_pin_memory in (True, False) and cfg.trainer.tf32 in (True, None)


def test_smoke_keeps_named_files_and_model_and_drops_the_recipe_ones():
    cfg = compose(["recipe=minilm-ner", "debug=smoke", "data.train_file=mine.conll", "model.name_or_path=/m"])
    assert cfg.data.train_file == "mine.conll" and cfg.data.validation_file is None
    assert cfg.model.name_or_path == "/m" and cfg.model.init == "scratch"
    assert cfg.data.max_train_samples == cfg.data.synthetic.num_train  # your files: capped like generated data
    plain = compose(["recipe=minilm-ner", "debug=smoke"])
    assert plain.data.train_file is None and plain.model.name_or_path is None


# -- debug=smoke keeps what you name (end to end) ------------------------------------------------------------------
SMOKE_FAST = ["trainer.max_steps=2", "num_samples=2", "quiet=true"]


@pytest.mark.slow
def test_smoke_runs_on_your_files_first_rows(tmp_path):
    import json

    from conftest import run_pipeline

    rows = [{"tokens": ["Zorblax", f"w{i}", "visited", "Quuxland"], "tags": ["B-PER", "O", "O", "B-LOC"]}
            for i in range(600)]
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = run_pipeline(["recipe=bert-ner", "debug=smoke", f"data.train_file={tmp_path / 'mine.jsonl'}", *SMOKE_FAST],
                     tmp_path / "run")
    assert m["train_samples"] == 256  # capped like the generated data (of 480 after cutting validation / test)
    sample = json.loads((tmp_path / "run" / "samples.jsonl").read_text().splitlines()[0])
    assert sample["tokens"][0] == "Zorblax"  # the run read these files, not generated data


def test_smoke_caps_on_your_files_create_no_error_the_whole_data_lacks(tmp_path):
    """The first 256 training rows hold no MISC tag, later ones and the validation file do: the whole data is
    consistent, so smoke's caps must not refuse it; metrics.json says what the caps kept and set aside."""
    import json

    from conftest import run_pipeline

    plain = {"tokens": ["Zorblax", "visited", "Quuxland"], "tags": ["B-PER", "O", "B-LOC"]}
    misc = {"tokens": ["the", "Klingon", "team"], "tags": ["O", "B-MISC", "O"]}
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [plain] * 300 + [misc] * 40))
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [misc, plain] * 20))
    m = run_pipeline(["recipe=bert-ner", "debug=smoke", f"data.train_file={tmp_path / 'train.jsonl'}",
                      f"data.validation_file={tmp_path / 'dev.jsonl'}", f"data.test_file={tmp_path / 'dev.jsonl'}",
                      *SMOKE_FAST], tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["data_capped"] == {"train": {"kept": 256, "set_aside": 84}, "validation": {"kept": 32,
                                    "set_aside": 8}, "test": {"kept": 32, "set_aside": 8}}
    assert m["train_samples"] == 256 and "eval_MISC_number" in m  # the label set is the whole data's


@pytest.mark.slow
def test_smoke_with_a_named_model_builds_a_tiny_one_of_its_family_with_its_tokenizer(tmp_path):
    import json

    import transformers

    from conftest import run_pipeline
    from pipeline.families import get_family
    from pipeline.models.scratch import train_tokenizer

    folder = tmp_path / "my-roberta"
    tok = train_tokenizer(get_family("roberta"), [f"the old fox number {i} visited Paris" for i in range(200)], 300)
    tok.save_pretrained(folder)
    transformers.RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64).save_pretrained(folder)
    m = run_pipeline(["recipe=bert-ner", "debug=smoke", f"model.name_or_path={folder}", *SMOKE_FAST],
                     tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert m["family"] == "roberta" and saved["model_type"] == "roberta"  # the named model's family, not bert
    assert saved["vocab_size"] == len(tok) and saved["hidden_size"] == 32  # its tokenizer; the smoke sizes
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "run" / "model").get_vocab() == tok.get_vocab()


def _leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


@pytest.mark.slow
def test_any_key_of_the_config_with_a_wrong_value_is_one_line_or_accepted():
    """Every leaf of the composed config (RLHF recipe + the other tasks' keys), set to a value of the wrong kind
    (text for a number / flag, a list for text or null): resolve accepts it or stops with one PipelineError line;
    never another exception (a traceback for the user)."""
    from omegaconf import OmegaConf

    from pipeline.stages.resolve import resolve
    from pipeline.errors import PipelineError

    problems, seen = [], set()
    for base in (["recipe=gpt2-rlhf", "debug=smoke", "method=lora"], ["recipe=bert-ner", "debug=smoke"],
                 ["recipe=t5-summarization", "debug=smoke"]):
        cfg0 = compose(base)
        for key, value in _leaves(OmegaConf.to_container(cfg0)):
            if key in seen or key.startswith("hydra"):
                continue
            seen.add(key)
            wrong = "abc" if isinstance(value, (bool, int, float, list)) else [1, 2]
            cfg = cfg0.copy()
            OmegaConf.update(cfg, key, wrong, merge=False, force_add=True)
            try:
                resolve(cfg)
            except PipelineError as e:
                if "\n" in str(e):
                    problems.append(f"{key}={wrong!r}: two lines: {e}")
            except Exception as e:
                problems.append(f"{key}={wrong!r}: {type(e).__name__}: {e}")
    assert len(seen) > 100 and not problems, "\n".join(problems)


def test_a_column_mapping_the_data_config_lacks_is_taken_as_typed():
    """``data.columns.<canonical>=<yours>`` for a column the recipe's data config does not name (text_pair here):
    added, on the command line as in compose, without Hydra's ``+``; the recipe's own mappings stay."""
    cfg = compose(["recipe=bert-classification", "data.columns.text_pair=hypothesis"])
    assert dict(cfg.data.columns) == {"text": "text", "label": "label_text", "text_pair": "hypothesis"}
    out = run_cli(["recipe=bert-classification", "data.columns.text_pair=hypothesis", "--cfg", "job"])
    assert out.returncode == 0 and "text_pair: hypothesis" in out.stdout, out.stderr[-500:]


def test_a_home_path_typed_after_the_equals_sign_is_expanded_before_hydra_parses_it():
    """``data.train_file=~/x.jsonl``: the shell leaves ``~`` after ``=`` alone and Hydra's grammar refuses it."""
    import os

    from pipeline.commands.app import user_overrides

    home = os.path.expanduser("~")
    assert user_overrides(["data.train_file=~/d/x.jsonl", "hydra.run.dir=~", "data.columns.text=~weird"]) == [
        f"data.train_file={home}/d/x.jsonl", f"hydra.run.dir={home}", "++data.columns.text=~weird"]
