"""The layout the docs promise: a task is one module in pipeline/tasks/ + one conf/task/ file, nothing outside
pipeline/tasks/ names a task, and the task modules do not import the commands built over them."""

from __future__ import annotations

import ast

import pytest
from omegaconf import OmegaConf

from conftest import ROOT


def task_names():
    from pipeline.tasks import task_classes

    return set(task_classes())


def string_constants(path):
    """(line, value) of every string constant in a module, docstrings excluded."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_no_module_outside_tasks_names_a_task():
    names = task_names()
    offenders = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        if (ROOT / "pipeline" / "tasks") in path.parents:
            continue
        offenders += [f"{path.relative_to(ROOT)}:{line}: {value!r}" for line, value in string_constants(path)
                      if value in names]
    assert not offenders, "task names outside pipeline/tasks/ (ask the task object instead):\n" + "\n".join(offenders)


def test_every_task_module_has_its_config_and_back():
    configs = {p.stem for p in (ROOT / "conf" / "task").glob("*.yaml")}
    assert configs == task_names()


@pytest.mark.parametrize("name", sorted(task_names()))
def test_task_config_matches_its_schema(name):
    """Every key of conf/task/<name>.yaml is a field of the task's Config dataclass, with a value of its type."""
    from pipeline.tasks import task_class

    cls = task_class(name)
    yaml = OmegaConf.load(ROOT / "conf" / "task" / f"{name}.yaml")
    assert yaml.name == name
    merged = OmegaConf.merge(OmegaConf.structured(cls.Config), yaml)  # raises on unknown keys / wrong types
    assert not OmegaConf.missing_keys(merged), f"conf/task/{name}.yaml leaves {OmegaConf.missing_keys(merged)} unset"
    for attr in ("archs", "auto_class", "peft_task_type", "pipeline_tag", "card_metric_type", "columns",
                 "output_field"):
        assert getattr(cls, attr), f"{cls.__name__}.{attr} is not set"


def test_tasks_do_not_import_the_commands():
    for path in sorted((ROOT / "pipeline" / "tasks").glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | \
                   {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not imported & {"pipeline.predict", "pipeline.cli", "pipeline.compare", "pipeline.run"}, path.name
