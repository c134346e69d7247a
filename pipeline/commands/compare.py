"""``finetune-compare DIR... [--out DIR]``: one report from any set of finished (or failed) runs.

Scans the directories recursively for run directories and writes comparison.md / .csv / .json / .png / .html
(pipeline/reports/compare.py): per family, a table sorted by the headline metric, the metric against trainable
parameters, train time and peak memory with the Pareto front marked, the loss curves, and an Optuna study when the
folder holds one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.commands import one_line_errors
from pipeline.errors import ConfigError
from pipeline.infra.rundir import unwritable_reason
from pipeline.reports.compare import compare


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="finetune-compare", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", help="run directories or folders holding them (searched recursively)")
    parser.add_argument("--out", help="where the comparison files go (default: the first directory)")
    args = parser.parse_args(argv)
    with one_line_errors():
        missing = [d for d in args.dirs if not Path(d).is_dir()]
        if missing:
            raise ConfigError(f"{missing[0]}: no such directory; give run directories or a multirun folder")
        why = unwritable_reason(args.out or args.dirs[0])
        if why:
            raise ConfigError(f"--out {args.out or args.dirs[0]}: cannot write the report there ({why}); give a "
                              f"writable folder with --out")
        secs = compare(args.dirs, args.out)
    out = Path(args.out or args.dirs[0])
    n = sum(len(g) for g in secs.values())
    failed = sum(r["status"] in ("failed", "died") for g in secs.values() for r in g)
    print((out / "comparison.md").read_text())
    print(f"{n} runs ({failed} failed): {out / 'comparison.md'} .csv .json .png .html")


if __name__ == "__main__":
    main()
