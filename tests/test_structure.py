"""The layout the docs promise: a task is one module in pipeline/tasks/ + one conf/task/ file, nothing outside
pipeline/tasks/ names a task, and the task modules do not import the commands built over them.

The layers: every import of the package (module level and inside functions, read with ``ast``) runs downward in
``LAYERS``, no two modules import each other through any chain, internal imports sit at the top of the file
except in pipeline/commands/ (start-up time), few modules stand directly in pipeline/, and every console script
enters through pipeline/commands/."""

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
        assert not imported & {"pipeline.commands.predict", "pipeline.commands.finetune", "pipeline.reports.compare",
                               "pipeline.stages.run"}, path.name


# -- layers ----------------------------------------------------------------------------------------------------------
# Bottom to top: a module may import its own layer and the layers before it, never one after it.
LAYERS = ("errors", "util", "config", "metrics", "families", "infra", "integrations", "data", "tasks", "models",
          "training", "rlhf", "reports", "stages", "commands", "__main__")
PACKAGE = ROOT / "pipeline"


def module_name(path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int | None:
    """Index in LAYERS of a module of the package (None for the package itself, ``pipeline/__init__.py``)."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else None


def internal_imports():
    """(importing module, its file, line, imported module, imported name, at module level) for every import of a
    ``pipeline`` module anywhere in the package."""
    modules = {module_name(f): f for f in PACKAGE.rglob("*.py") if "__pycache__" not in f.parts}
    out = []
    for mod, path in sorted(modules.items()):
        tree = ast.parse(path.read_text(), filename=str(path))
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [(a.name, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                # "from pipeline.x import y": y may be a submodule (pipeline.x.y) or a name of pipeline.x
                targets = [(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module, a.name)
                           for a in node.names]
            else:
                continue
            for target, name in targets:
                if target == "pipeline" or target.startswith("pipeline."):
                    while target not in modules and "." in target:
                        target = target.rpartition(".")[0]
                    out.append((mod, path, node.lineno, target, name, id(node) in top))
    return modules, out


def test_layer_names_are_the_folders_of_the_package():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    files = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert folders | files == set(LAYERS), (sorted(folders | files), LAYERS)


def test_imports_run_downward_only():
    _, imports = internal_imports()
    upward = [f"{path.relative_to(ROOT)}:{line} ({LAYERS[layer(mod)]}) imports {name} from {target} "
              f"({LAYERS[layer(target)]})" for mod, path, line, target, name, _ in imports
              if layer(mod) is not None and layer(target) is not None and layer(target) > layer(mod)]
    assert not upward, "imports from a higher layer (LAYERS in this file):\n" + "\n".join(upward)


def test_no_import_cycles():
    modules, imports = internal_imports()
    edges = {m: set() for m in modules}
    where = {}
    for mod, path, line, target, name, _ in imports:
        if target != mod:
            edges[mod].add(target)
            where.setdefault((mod, target), f"{path.relative_to(ROOT)}:{line} imports {name} from {target}")

    def reaches(start, goal, seen):
        return any(n == goal or (n not in seen and not seen.add(n) and reaches(n, goal, seen)) for n in edges[start])

    cycles = sorted(where[(a, b)] for a in edges for b in edges[a] if reaches(b, a, set()))
    assert not cycles, "import cycles (each edge lies on one):\n" + "\n".join(cycles)


def test_internal_imports_are_at_the_top_of_the_file_outside_the_commands():
    """Inside a function only in pipeline/commands/, where start-up time needs it (`finetune --help`, `--cfg job` and
    bad arguments import no torch), each with its reason on the line or the one above."""
    _, imports = internal_imports()
    local = [(mod, path, line, target) for mod, path, line, target, _, at_top in imports if not at_top]
    outside = [f"{path.relative_to(ROOT)}:{line} imports {target} inside a function" for mod, path, line, target in local
               if not mod.startswith("pipeline.commands.")]
    assert not outside, "\n".join(outside)
    unexplained = []
    for mod, path, line, target in local:
        lines = path.read_text().splitlines()
        i = line - 1  # the reason: on the import's line, or on a line above its block of imports
        while "#" not in lines[i] and i > 0 and lines[i - 1].strip().startswith(("from ", "import ", "#")):
            i -= 1
        if "#" not in lines[i]:
            unexplained.append(f"{path.relative_to(ROOT)}:{line} imports {target} inside a function without a reason")
    assert not unexplained, "\n".join(unexplained)


def test_few_modules_stand_directly_in_the_package():
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(top) <= 6, top


def test_every_console_script_enters_through_the_commands_package():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"finetune", "finetune-rlhf", "finetune-predict", "finetune-compare", "finetune-export",
                            "finetune-inspect"}
    for name, target in scripts.items():
        module, _, func = target.partition(":")
        assert module.startswith("pipeline.commands."), f"{name} = {target}"
        import importlib

        assert callable(getattr(importlib.import_module(module), func)), target
