"""Causal-LM fine-tuning of decoder models on plain text, prompt/completion pairs, Alpaca-style instructions or chat
conversations (``pipeline/tasks/chat_format.py``), rendered with a chat template, trained on the responses only
(``train_on``), and packed into blocks whose examples do not see each other (``pipeline/tasks/packing.py``)."""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field

import datasets
from omegaconf import MISSING

from pipeline.data import synthetic as gen
from pipeline.errors import ConfigError, DataError
from pipeline.metrics import load_metric
from pipeline.tasks import base, packing
from pipeline.tasks import chat_format as cf
from pipeline.tasks.base import Task

log = logging.getLogger("pipeline")
PROMPT_TYPES = ("PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING")  # PEFT drops / shifts position ids: no packing
REQUIRED = {"text": ("text",), "prompt_completion": ("prompt", "completion"), "instruction": ("instruction", "output"),
            "messages": ("messages",)}


def model_max_positions(model) -> int | None:
    cfg = model.config
    for key in ("n_positions", "max_position_embeddings"):
        if getattr(cfg, key, None):
            return int(getattr(cfg, key))
    return None


@dataclass
class Config(base.Config):
    block_size: int = MISSING
    prompt_tokens: int = MISSING
    generation: dict = field(default_factory=dict)
    format: str = "auto"
    train_on: str = "assistant"
    packing: bool = True
    packing_strategy: str = "bfd"
    chat_template: str = "chatml"
    prefer_model_template: bool = True


class GenerationTask(Task):
    name = "generation"
    Config = Config
    archs = ("decoder",)
    auto_class = "AutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"
    pipeline_tag = "text-generation"
    card_metric_type = "perplexity"
    columns = ("text",)                    # per run: those of task.format (auto: any of chat_format.COLUMNS)
    input_fields = ("prompt",)
    input_aliases = {"prompt": ("text", "messages")}
    output_field = "completion"
    cli_options = {"chat": dict(action="store_true",
                                help="render each prompt as a user turn with the run's chat template (a --file row "
                                     "may hold a messages list); stop at the end-of-turn token"),
                   "system": dict(metavar="TEXT", help="with --chat: a system message before each conversation")}

    def __init__(self, cfg):
        super().__init__(cfg)
        t = self.tcfg
        fmt = str(t.get("format", "auto"))
        for key, value, allowed in (("format", fmt, ("auto", *cf.FORMATS)),
                                    ("train_on", t.get("train_on", "assistant"), ("assistant", "all")),
                                    ("packing_strategy", t.get("packing_strategy", "bfd"), packing.STRATEGIES)):
            if value not in allowed:
                raise ConfigError(f"task.{key}={value}: use one of {' | '.join(allowed)}")
        self.columns = () if fmt == "auto" else REQUIRED[fmt]
        self.optional_columns = cf.COLUMNS if fmt == "auto" else ("input",) if fmt == "instruction" else ()
        self.conversational = fmt in ("instruction", "messages")  # auto / prompt_completion: seen in clean()
        self.template = {}
        self.cuts = {}

    # -- data --------------------------------------------------------------------------------------------------
    def synthetic_row(self, rng, split):
        adj, animal, verb, thing = (rng.choice(gen.ADJ), rng.choice(gen.ANIMAL), rng.choice(gen.VERB),
                                    rng.choice(gen.THING))
        fmt = str(self.tcfg.get("format", "auto"))
        if fmt == "instruction":
            return {"instruction": "Write one sentence about the animal.", "input": f"the {adj} {animal}",
                    "output": f"The {adj} {animal} {verb} the {thing}."}
        if fmt == "messages":
            turns = [{"role": "user", "content": f"Tell me about the {adj} {animal}."},
                     {"role": "assistant", "content": f"The {adj} {animal} {verb} the {thing}."}]
            if rng.random() < 0.5:
                turns += [{"role": "user", "content": "Where?"},
                          {"role": "assistant", "content": f"Near the {rng.choice(gen.THING)}."}]
            return {"messages": ([{"role": "system", "content": "You tell short stories."}] if rng.random() < 0.5
                                 else []) + turns}
        if fmt == "prompt_completion":
            return {"prompt": f"The {adj} {animal} {verb} the", "completion": f" {thing}."}
        sents = []
        for _ in range(rng.randint(3, 6)):
            a, v, t = rng.choice(gen.ANIMAL), rng.choice(gen.VERB), rng.choice(gen.THING)
            sents.append(f"The {rng.choice(gen.ADJ)} {a} {v} the {t} near the {rng.choice(gen.THING)}.")
        return {"text": " ".join(sents)}

    def examples(self, split: str, d):
        """(row index, Example) of every row; a row of no format, or a malformed conversation, is one DataError."""
        fmt, i = str(self.tcfg.format), 0
        for batch in d.iter(batch_size=1000):
            for values in zip(*batch.values()):
                yield i, cf.example(dict(zip(batch, values)), fmt, f"data split '{split}' row {i}")
                i += 1

    def raw_rows(self, split, d):
        """format=auto: a split with none of the columns of any format is refused, naming the columns it has."""
        mapping = dict(self.cfg.data.get("columns") or {})
        if not ({mapping.get(c, c) for c in cf.COLUMNS} | set(cf.COLUMNS)) & set(d.column_names):
            raise DataError(f"split '{split}' has no column 'text' nor any other of {', '.join(cf.COLUMNS[:-1])} "
                            f"({cf.FORMAT_NAMES}); columns are {d.column_names}; set data.columns.text=<column> "
                            f"(or .messages=, .prompt= ...)")
        return d

    def clean(self, split, d):
        keep, why = [], Counter()
        for i, ex in self.examples(split, d):
            if not ex.response.strip():
                why["empty response" if ex.text is None else "empty text"] += 1
            elif ex.messages is not None and self.tcfg.train_on == "assistant" and \
                    not any(m["role"] == "assistant" for m in ex.messages):
                why["no assistant turn"] += 1
            else:
                keep.append(i)
                self.conversational |= ex.messages is not None
        return (d if len(keep) == len(d) else d.select(keep)), dict(why)

    def tokenizer_corpus(self, raw):
        for _, ex in self.examples("train", raw["train"]):
            yield ex.text if ex.text is not None else ex.prompt + ex.completion if ex.messages is None else \
                "\n".join(f"{m['role']}\n{m['content']}" for m in ex.messages)  # role names: template words

    def block_size(self, model) -> int:
        limit = model_max_positions(model)
        return min(int(self.tcfg.block_size), limit) if limit else int(self.tcfg.block_size)

    def packs(self) -> bool:
        """Examples share rows (unless a PEFT prompt-type method, which drops or shifts position ids, is used)."""
        if not self.tcfg.packing:
            return False
        method = self.cfg.get("method") or {}
        if method.get("peft_type") in PROMPT_TYPES and self.tcfg.packing_strategy != "wrapped":
            log.warning("task.packing: method=%s drops or shifts position ids (PEFT prompt-type methods), which keep "
                        "packed examples apart; one example per row for this run", method.get("name"))
            return False
        return True

    # -- model -------------------------------------------------------------------------------------------------
    def adapt(self, tokenizer, model):
        """Conversational data: a chat template on the tokenizer (the model's own, else task.chat_template with its
        tokens added and the embeddings resized), generation stopping at its end-of-turn token."""
        if self.conversational:
            self.template = cf.install_template(tokenizer, model, str(self.tcfg.chat_template),
                                                bool(self.tcfg.prefer_model_template))

    @property
    def new_token_ids(self) -> list[int]:
        """Token ids the chat template added (LoRA trains their embedding rows: methods.apply)."""
        return list(self.template.get("new_token_ids") or [])

    # -- preprocessing -----------------------------------------------------------------------------------------
    def preprocess(self, raw, tokenizer, model):
        eos, block = tokenizer.eos_token_id, self.block_size(model)
        if eos is None:
            raise DataError(f"tokenizer of {self.cfg.model.name_or_path} has no EOS token to end examples")
        if self.conversational and self.tcfg.packing and self.tcfg.packing_strategy == "wrapped":
            raise ConfigError("task.packing_strategy=wrapped joins examples and lets them attend to each other; "
                              "conversations need task.packing_strategy=bfd (or task.packing=false)")
        eot = cf.end_of_turn(tokenizer) if self.conversational else None
        fmt, train_on, out = str(self.tcfg.format), str(self.tcfg.train_on), {}
        for split, d in raw.items():
            def encode(batch, indices, split=split):
                rows = [dict(zip(batch, v)) for v in zip(*batch.values())]
                res = {"input_ids": [], "labels": [], "cut": [], "part": []}
                for i, row in zip(indices, rows):
                    ex = cf.example(row, fmt, f"data split '{split}' row {i}")
                    ids, labels = cf.encode(tokenizer, ex, train_on, eos, eot)
                    chunks = range(0, len(ids), block) if ex.text is not None else [0]  # documents: every token
                    for part, c in enumerate(chunks):  # conversations: truncated (counted)
                        res["input_ids"].append(ids[c:c + block])
                        res["labels"].append([-100] + labels[c + 1:c + block])
                        res["cut"].append(0 if ex.text is not None else max(0, len(ids) - block))
                        res["part"].append(part)
                return res

            enc = d.map(encode, batched=True, with_indices=True, remove_columns=d.column_names,
                        num_proc=self.cfg.data.num_proc, desc=f"tokenize ({split})")
            self._report(split, enc)
            enc = enc.filter(lambda b: [any(x != -100 for x in row) for row in b["labels"]], batched=True,
                             desc="drop examples with no trained token")
            if len(enc) == 0:
                raise DataError(f"split '{split}': no example keeps a trained token within task.block_size={block}")
            out[split] = enc.remove_columns(["cut", "part"])
        out = datasets.DatasetDict(out)
        return packing.pack(out, block, str(self.tcfg.packing_strategy), self.cfg.data.num_proc) if self.packs() \
            else out

    def render_rows(self, raw_split, tokenizer):
        """Conversations rendered with the run's chat template (what the tokens of finetune-inspect come from)."""
        if not self.conversational:
            return None
        return [cf.render(tokenizer, ex.messages, False) if ex.messages is not None else None
                for _, ex in self.examples("inspect", raw_split)]

    def _report(self, split, enc):
        """Truncated examples, documents cut into several blocks, examples left with no trained token: counted in
        ``self.cuts`` and logged (nothing is changed silently)."""
        cuts, parts = enc["cut"], enc["part"]
        trained = [any(x != -100 for x in row) for row in enc["labels"]]
        facts = {"examples_truncated": sum(1 for c in cuts if c > 0), "tokens_truncated": sum(cuts),
                 "documents_split": parts.count(1), "examples_without_trained_tokens": trained.count(False)}
        self.cuts[split] = {k: v for k, v in facts.items() if v}
        if facts["examples_truncated"]:
            log.warning("data: %d %s examples longer than task.block_size were truncated (%d tokens cut)",
                        facts["examples_truncated"], split, facts["tokens_truncated"])
        if facts["documents_split"]:
            log.info("data: %d %s documents longer than task.block_size were split into blocks",
                     facts["documents_split"], split)
        if trained.count(False):
            log.warning("data: %d %s examples dropped: no trained token within task.block_size", trained.count(False),
                        split)

    def cut_counts(self, tokenized):
        """(``tokenized``, {split: {what: count}}): examples truncated / documents split at task.block_size and
        examples left without a trained token (metrics.json ``data_truncated`` where the run stage asks for it)."""
        parent = getattr(super(), "cut_counts", None)
        tokenized, counts = parent(tokenized) if parent else (tokenized, {})
        for split, facts in self.cuts.items():
            counts.setdefault(split, {}).update(facts)
        return tokenized, {k: v for k, v in counts.items() if v}


    def collator(self, tokenizer, model):
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return packing.CausalCollator(pad)

    # -- evaluation --------------------------------------------------------------------------------------------
    def compute_metrics(self, tokenizer):
        return packing.response_metrics

    def preprocess_logits_for_metrics(self):
        return packing.token_loss_sums

    def postprocess_metrics(self, metrics, prefix):
        loss = metrics.get(f"{prefix}_response_loss", metrics.get(f"{prefix}_loss"))
        if loss is not None and math.isfinite(loss):
            ppl = load_metric("perplexity").compute(losses=[loss], weights=[1])["perplexity"]
            metrics[f"{prefix}_perplexity"] = ppl
        return metrics

    def samples(self, trainer, tokenizer, raw_split, tokenized_split, n):
        prompts, refs = [], []
        for _, ex in self.examples("test", raw_split.select(range(min(n, len(raw_split))))):
            if ex.messages is not None:
                last = max(i for i, m in enumerate(ex.messages) if m["role"] == "assistant") \
                    if any(m["role"] == "assistant" for m in ex.messages) else len(ex.messages)
                prompts.append(ex.messages[:last])
                refs.append(ex.messages[last]["content"] if last < len(ex.messages) else "")
            elif ex.prompt is not None:
                prompts.append(ex.prompt)
                refs.append(ex.completion)
            else:
                ids = tokenizer(ex.text, add_special_tokens=False)["input_ids"]
                prompts.append(tokenizer.decode(ids[: self.tcfg.prompt_tokens]))
                refs.append(tokenizer.decode(ids[self.tcfg.prompt_tokens:]))
        model, outs = trainer.model.eval(), {}
        for chat in (False, True):
            idx = [i for i, p in enumerate(prompts) if isinstance(p, list) == chat]
            if idx:
                outs.update(zip(idx, self.predict(model, tokenizer, [{"prompt": prompts[i]} for i in idx], chat=chat)))
        return [{"prompt": p, "reference": r, "completion": outs[i]} for i, (p, r) in enumerate(zip(prompts, refs))]

    # -- inference ---------------------------------------------------------------------------------------------
    def predict(self, model, tokenizer, rows, batch_size=8, progress=False, generation=None, chat=False, system=None,
                **options):
        gen_cfg = self.generation_settings(generation)
        if chat:
            if not tokenizer.chat_template:
                raise ConfigError("this run's tokenizer has no chat template (it was trained on plain text); "
                                  "predict without --chat")
            texts = []
            for r in rows:
                p = r["prompt"]
                msgs = cf._messages(p, "--chat input") if isinstance(p, list) else [{"role": "user", "content": str(p)}]
                if system and not (msgs and msgs[0]["role"] == "system"):
                    msgs = [{"role": "system", "content": str(system)}] + msgs
                texts.append(cf.render(tokenizer, msgs, True))
            gen_cfg.setdefault("eos_token_id", cf.stop_ids(tokenizer))
        else:
            if any(isinstance(r["prompt"], list) for r in rows):
                raise ConfigError("an input holds a list of messages: give --chat to render it with the chat template")
            texts = [str(r["prompt"]) for r in rows]
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return cf.generate_from_ids(model, tokenizer, ids, gen_cfg, batch_size, progress)


TASK_CLASS = GenerationTask
