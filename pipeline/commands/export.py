"""``finetune-export RUN_DIR [--merge] [--out DIR]``: load a run's adapter model, merge it into a full model.

``--merge`` folds the adapter into the base weights, saves a plain transformers model to ``RUN_DIR/merged`` and checks
that its outputs equal the adapter model's (pipeline/models/saved.py). Imports stay light until a model is loaded:
``--help`` does not import torch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.commands import one_line_errors
from pipeline.errors import ConfigError
from pipeline.infra.rundir import unwritable_reason


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="finetune-export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a finished run directory (or its model/ folder)")
    parser.add_argument("--merge", action="store_true", help="merge the adapter into a full model")
    parser.add_argument("--out", help="where the merged model goes (default RUN_DIR/merged)")
    args = parser.parse_args(argv)
    with one_line_errors():
        if args.out:
            why = "it is a file" if Path(args.out).expanduser().is_file() else unwritable_reason(args.out)
            if why:
                raise ConfigError(f"--out {args.out}: cannot write the merged model there ({why}); give a writable "
                                  f"folder")
        from transformers.utils import logging as hf_logging  # transformers, torch: only once the arguments hold

        from pipeline.models.saved import merge, model_dir_of  # (--help and bad arguments stay fast)

        hf_logging.disable_progress_bar()
        model_dir = model_dir_of(Path(args.run_dir).expanduser())
        if not args.merge:
            acfg = model_dir / "adapter_config.json"
            kind = f"{json.loads(acfg.read_text())['peft_type']} adapter" if acfg.is_file() else "full model"
            print(f"{model_dir}: {kind}; --merge writes a merged full model (LoRA-type adapters)")
            return
        out, diff = merge(args.run_dir, args.out)
    print(f"merged: {out} (outputs equal the adapter model's, max |diff| {diff:.1e})")


if __name__ == "__main__":
    main()
