"""Filesystem helpers: the config folder, packaged-resource paths, and atomic writes (one writer, fsync'd)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

from pipeline.errors import ModelError

PKG_PREFIX = "pkg://"
CONF_DIR = Path(__file__).resolve().parent.parent.parent / "conf"  # editable install: the repo's conf/


def resolve_pkg_path(name_or_path: str) -> str:
    """``pkg://package/sub/dir`` -> the directory inside the installed package; other strings unchanged."""
    if not str(name_or_path).startswith(PKG_PREFIX):
        return name_or_path
    package, _, sub = str(name_or_path)[len(PKG_PREFIX):].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        hint = package.replace("_", "-")
        raise ModelError(f"model {name_or_path}: Python package '{package}' is not installed; "
                         f"install it with: pip install {hint}")
    return str(Path(list(spec.submodule_search_locations)[0]) / sub)


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` next to ``path``, flush it to disk, then rename: readers never see a half-written file, and
    a crash right after leaves either the old file or the whole new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """``obj`` as indented, key-sorted JSON through ``write_atomic``."""
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


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
