"""The second tokenisation of the same data with the same tokenizer is a datasets cache hit, across processes.

Each run is a fresh Python process (as a second `finetune` is): data -> tokenizer (a scratch tokenizer trained on the
fly, or pretrained MiniLM) -> task.preprocess. The second process must load the Arrow files the first one wrote
(same file names, files not rewritten) instead of tokenising again.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

PREPROCESS = """
import json, sys, time
sys.path.insert(0, "tests")
from conftest import compose
from pipeline.models import load as models
from pipeline.data import load_raw
from pipeline.tasks import get_task

cfg = compose(sys.argv[1:])
task = get_task(cfg)
raw, _, _ = load_raw(cfg.data, task, int(cfg.seed))
tokenizer, model = models.load(cfg, task, raw)
t = time.time()
tok = task.preprocess(raw, tokenizer, model)
print(json.dumps({"seconds": time.time() - t, "vocab": tokenizer.get_vocab(),
                  "files": {s: [f["filename"] for f in d.cache_files] for s, d in tok.items()}}))
"""


def _preprocess(overrides, cache_dir):
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache_dir), "HF_HOME": str(cache_dir.parent / "hf_home")}
    out = subprocess.run([sys.executable, "-c", PREPROCESS, *overrides], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("overrides", [
    ["recipe=bert-ner", "debug=smoke"],            # scratch WordPiece tokenizer (ties broken in hash-map order)
    ["recipe=t5-summarization", "debug=smoke"],    # scratch Unigram tokenizer
    ["recipe=gpt2-generation", "debug=smoke"],     # scratch byte-level BPE, packed blocks
    ["recipe=quickstart", "data.synthetic.num_train=64", "data.synthetic.num_validation=16",
     "data.synthetic.num_test=16"],                # pretrained MiniLM tokenizer from files
], ids=["ner-scratch", "summarization-scratch", "generation-scratch", "ner-minilm"])
def test_second_tokenisation_is_a_cache_hit(overrides, tmp_path):
    cache = tmp_path / "datasets"
    first = _preprocess(overrides, cache)
    files = {f: os.stat(f).st_mtime_ns for split in first["files"].values() for f in split}
    second = _preprocess(overrides, cache)

    assert second["vocab"] == first["vocab"], "the scratch tokenizer must be identical across runs"
    for split, names in first["files"].items():
        assert names and all(n.startswith(str(cache)) for n in names), f"{split}: not written to the disk cache"
        assert second["files"][split] == names, f"{split}: the second run tokenised again instead of a cache hit"
    assert {f: os.stat(f).st_mtime_ns for f in files} == files, "cache files were rewritten"
