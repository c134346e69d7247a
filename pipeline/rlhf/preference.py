"""Preference data for the RLHF stage (``cfg.rlhf.data``): pairs ``prompt`` / ``chosen`` / ``rejected`` where chosen
and rejected hold only the responses (TRL's convention when a prompt is given), plus prompt-only rows for GRPO/RLOO.

Sources: local JSON/JSONL/CSV files, a hub dataset (e.g. Anthropic/hh-rlhf), or a deterministic synthetic task.
Rows may carry explicit prompts (a response that repeats its prompt is cut back to the response) or be full
transcripts with a shared prefix (``chosen`` / ``rejected`` only): the prompt is the shared part up to the last
``response_marker`` (hh-rlhf: "\\n\\nAssistant:"), else up to the last whitespace; their prompt is rendered with
``prompt_template``. Rows in TRL's conversational format (``prompt`` / ``chosen`` / ``rejected`` as lists of
``{role, content}``, or ``chosen`` / ``rejected`` whole conversations sharing their first turns) are rendered with the
policy's chat template, the one its fine-tuning trained on (``rlhf.data.chat_template`` from conf/chat_template/ when
the policy has none): the prompt ends with the generation prompt, each response with the end-of-turn token. Rows with
an empty chosen or rejected response are dropped and counted.
"""

from __future__ import annotations

import logging
import random

import datasets
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast
from trl.data_utils import is_conversational, maybe_apply_chat_template, maybe_extract_prompt

from pipeline.data.readers import data_files, read_files
from pipeline.errors import DataError
from pipeline.rlhf.common import load_tokenizer
from pipeline.tasks.chat_format import load_template

log = logging.getLogger(__name__)

# The synthetic task speaks the language of the generation task's generated stories (pipeline/data/synthetic.py),
# so a policy fine-tuned on those stories can already write its responses. The preferred response ends with MARKER:
# a reward model learns "MARKER in the completion -> high reward", and a policy can learn to say it.
ADJ = ["small", "old", "quiet", "bright", "lazy", "clever", "brave", "tired"]
ANIMAL = ["fox", "dog", "cat", "horse", "owl", "rabbit", "bear", "crow"]
VERB = ["watches", "follows", "finds", "chases", "ignores", "greets"]
THING = ["river", "garden", "stone", "house", "tree", "road", "hill", "boat"]
MARKER = "garden"


def synthetic_pair(rng: random.Random) -> dict:
    prompt = f"The {rng.choice(ADJ)} {rng.choice(ANIMAL)} {rng.choice(VERB)} the"
    others = [t for t in THING if t != MARKER]
    thing, other = rng.choice(others), rng.choice(others)
    return {"prompt": prompt, "chosen": f" {thing} near the {MARKER}.", "rejected": f" {thing} near the {other}."}


def synthetic(sizes, seed: int):
    """train / test splits of ``synthetic_pair`` rows; identical for the same seed and sizes."""
    out = {}
    for split in ("train", "test"):
        rng = random.Random(f"preference-{seed}-{split}")
        out[split] = datasets.Dataset.from_list([synthetic_pair(rng) for _ in range(int(sizes[f"num_{split}"]))])
    return datasets.DatasetDict(out)


def preference_source(dcfg, run_data_source: str | None = None) -> str:
    """auto: files if given, else a hub path, else follow the run (synthetic run data -> synthetic preferences)."""
    if dcfg.source != "auto":
        return dcfg.source
    if dcfg.get("train_file"):
        return "json" if str(dcfg.train_file).endswith((".json", ".jsonl")) else "csv"
    if run_data_source == "synthetic" or not dcfg.get("path"):
        return "synthetic"
    return "hub"


def _read(dcfg, source: str, seed: int):
    if source == "synthetic":
        return synthetic(dcfg.synthetic, seed)
    if source == "hub":
        try:
            return datasets.load_dataset(dcfg.path, dcfg.get("config_name"), data_dir=dcfg.get("data_dir"),
                                         revision=dcfg.get("revision"))
        except Exception as e:
            raise DataError(f"rlhf.data.path={dcfg.path}: cannot load the hub dataset ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160]}); use rlhf.data.train_file=<jsonl> or "
                            f"rlhf.data.source=synthetic") from e
    files = {s: dcfg[f"{s}_file"] for s in ("train", "test") if dcfg.get(f"{s}_file")}
    if "train" not in files:
        raise DataError("rlhf.data needs train_file=<jsonl>, path=<hub id>, or source=synthetic")
    data_files(dcfg)  # one-line errors for missing / empty files
    # split by split: a test file may have other columns (e.g. an explicit prompt) than the train file
    return {split: read_files(source, dcfg, {split: path})[split] for split, path in files.items()}


def _split_transcripts(chosen: str, rejected: str, marker: str) -> tuple[str, str, str]:
    """Shared prefix of two transcripts -> (prompt, chosen response, rejected response)."""
    n = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        n += 1
    shared = chosen[:n]
    if chosen == rejected:
        cut = len(chosen)
    elif marker and marker in shared:
        cut = shared.rfind(marker) + len(marker)
    else:
        cut = max(shared.rfind(" "), shared.rfind("\n"))
        cut = 0 if cut < 0 else cut
    return chosen[:cut], chosen[cut:], rejected[cut:]


def chat_renderer(template_name: str, policy_path: str | None):
    """A tokenizer that renders conversational rows: the policy's, with its own chat template, else one carrying
    conf/chat_template/<template_name>.yaml (only its template is used: nothing is tokenized with it)."""
    if policy_path:
        tok = load_tokenizer(policy_path)
        if tok.chat_template:
            return tok
    else:
        tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")),
                                      unk_token="<unk>", eos_token="<unk>")
    log.warning("rlhf data: conversational rows rendered with task template %s (%s has no chat template)",
                template_name, policy_path or "no policy")
    tok.chat_template = load_template(template_name)["template"]
    return tok


def _render_conversations(d, cols: dict, renderer, split: str):
    """TRL conversational rows -> prompt / chosen / rejected strings (trl.data_utils: the prompt is the shared first
    turns when not given, rendered with the generation prompt; the responses end with the end-of-turn token)."""
    tok = renderer()

    def convert(batch):
        out = {"prompt": [], "chosen": [], "rejected": []}
        for i in range(len(batch[cols["chosen"]])):
            row = {k: batch[c][i] for k, c in cols.items() if c in batch}
            try:
                row = maybe_apply_chat_template(maybe_extract_prompt(row), tok)
            except Exception as e:
                raise DataError(f"rlhf.data split '{split}' row {i}: cannot render it as a conversation "
                                f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); rows need role/content "
                                f"messages") from None
            for k in out:
                out[k].append(row[k])
        return out

    return d.map(convert, batched=True, remove_columns=d.column_names, desc=f"chat template ({split})")


def normalize(d, dcfg, split: str, renderer=None):
    """Rename to prompt/chosen/rejected, split transcripts, cut repeated prompts, render the prompt template;
    conversational rows are rendered with the chat template of ``renderer()`` (a tokenizer)."""
    cols = {k: dcfg.columns.get(k, k) for k in ("prompt", "chosen", "rejected")}
    missing = [cols[k] for k in ("chosen", "rejected") if cols[k] not in d.column_names]
    if missing:
        raise DataError(f"rlhf.data split '{split}' has no column {missing[0]!r} (preference rows need chosen and "
                        f"rejected); columns are {d.column_names}; set rlhf.data.columns.chosen=/rejected=<column>")
    has_prompt = cols["prompt"] in d.column_names
    if len(d) and is_conversational({k: d[0][c] for k, c in cols.items() if c in d.column_names}):
        if renderer is None:
            raise DataError(f"rlhf.data split '{split}' holds conversations and no chat template is at hand")
        return _render_conversations(d.select_columns([c for c in cols.values() if c in d.column_names]), cols,
                                     renderer, split)
    marker, template = str(dcfg.response_marker or ""), str(dcfg.prompt_template)

    def convert(batch):
        out = {"prompt": [], "chosen": [], "rejected": []}
        for i in range(len(batch[cols["chosen"]])):
            c, r = str(batch[cols["chosen"]][i] or ""), str(batch[cols["rejected"]][i] or "")
            if has_prompt:
                p = str(batch[cols["prompt"]][i] or "")
                if p and c.startswith(p) and r.startswith(p):  # full transcripts next to their prompt
                    c, r = c[len(p):], r[len(p):]
            else:
                p, c, r = _split_transcripts(c, r, marker)
            out["prompt"].append(template.format(prompt=p))
            out["chosen"].append(c)
            out["rejected"].append(r)
        return out

    return d.map(convert, batched=True, remove_columns=d.column_names, desc=f"preference rows ({split})")


def load_preferences(dcfg, seed: int, run_data_source: str | None = None, renderer=None):
    """DatasetDict train / test of prompt / chosen / rejected, and how many rows were dropped as empty.
    ``renderer``: a function returning the tokenizer whose chat template renders conversational rows."""
    source = preference_source(dcfg, run_data_source)
    ds = datasets.DatasetDict(_read(dcfg, source, seed))
    ds = datasets.DatasetDict({"test" if k in ("validation", "valid", "dev") and "test" not in ds else k: v
                               for k, v in ds.items()})
    if "train" not in ds:
        raise DataError(f"rlhf.data: no train split (found {list(ds)})")
    if "test" not in ds:
        n = len(ds["train"])
        if n < 4:
            raise DataError(f"rlhf.data: cannot cut a test split from {n} rows; give rlhf.data.test_file=...")
        parts = ds["train"].train_test_split(test_size=max(2, n * int(dcfg.test_split_percentage) // 100), seed=seed)
        ds = datasets.DatasetDict(train=parts["train"], test=parts["test"])
    out, dropped = {}, {}
    for split in ("train", "test"):
        cap = dcfg.get("max_train_samples" if split == "train" else "max_eval_samples")
        d = ds[split] if cap is None else ds[split].select(range(min(int(cap), len(ds[split]))))
        d = normalize(d, dcfg, split, renderer)
        n = len(d)
        d = d.filter(lambda b: [bool(c.strip()) and bool(r.strip()) for c, r in zip(b["chosen"], b["rejected"])],
                     batched=True, desc="drop empty responses")
        dropped[split] = n - len(d)
        if dropped[split]:
            log.warning("rlhf data: dropped %d of %d %s rows with an empty chosen or rejected response",
                        dropped[split], n, split)
        if len(d) == 0:
            raise DataError(f"rlhf.data split '{split}' has no usable preference rows")
        out[split] = d
    log.info("rlhf data (%s): %s", source, {k: len(v) for k, v in out.items()})
    return datasets.DatasetDict(out), dropped


def fit_pairs(split, tok, max_length: int, min_prompt_tokens: int = 8):
    """Make every prompt + response fit ``max_length`` tokens: long prompts keep their end (the turn the responses
    answer), long responses keep their start. Rows that fit are left untouched (no re-decoding)."""
    room = max_length - 4  # special tokens a tokenizer may add (BERT: [CLS] ... [SEP])

    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    def fit(batch):
        out = {"prompt": [], "chosen": [], "rejected": []}
        for p, c, r in zip(batch["prompt"], batch["chosen"], batch["rejected"]):
            pi, ci, ri = ids(p), ids(c), ids(r)
            cap = room - min(len(pi), min_prompt_tokens)
            if len(ci) > cap:
                c, ci = tok.decode(ci[:cap]), ci[:cap]
            if len(ri) > cap:
                r, ri = tok.decode(ri[:cap]), ri[:cap]
            budget = room - max(len(ci), len(ri))
            if len(pi) > budget:
                p = tok.decode(pi[len(pi) - budget:]) if budget > 0 else ""
            out["prompt"].append(p)
            out["chosen"].append(c)
            out["rejected"].append(r)
        return out

    return split.map(fit, batched=True, desc=f"fit pairs into {max_length} tokens")


def prompts_only(split):
    """GRPO / RLOO rows: the distinct prompts of a preference split, first-seen order."""
    seen = dict.fromkeys(split["prompt"])

    return datasets.Dataset.from_dict({"prompt": list(seen)})
