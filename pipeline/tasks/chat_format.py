"""Causal-LM training rows in the formats people fine-tune with, and how each becomes tokens + labels.

    text                plain text: every token is trained, EOS appended
    prompt_completion   ``prompt`` + ``completion`` strings (TRL's prompt-completion): no template, the completion
                        and EOS are trained; lists of messages in them are conversations (TRL's conversational form)
    instruction         Alpaca ``instruction`` / ``input`` / ``output``: the conversation [user: instruction + "\\n\\n"
                        + input, assistant: output]
    messages            a list of ``{role, content}`` (system / user / assistant / tool; ShareGPT ``{from, value}``
                        is read too), one or many turns

Conversations are rendered with the tokenizer's chat template (the model's own, or one from ``conf/chat_template/``
installed by ``install_template``). With ``train_on=assistant`` only the assistant turns, each with its end-of-turn
token, carry labels; everything else is -100. The turns are found by rendering the conversation's prefixes: the
text an assistant turn adds after the generation prompt is its span, so any template works, not only those with
``{% generation %}`` markers. ``generate_from_ids``: the generation samples and predict share, cut at the first stop
token.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf

from pipeline.errors import ConfigError, DataError
from pipeline.tasks.base import batches
from pipeline.util.paths import CONF_DIR

log = logging.getLogger("pipeline")

FORMATS = ("messages", "prompt_completion", "instruction", "text")  # auto: the first one a row fits
COLUMNS = ("messages", "prompt", "completion", "instruction", "input", "output", "text")
ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "tool": "tool"}
FORMAT_NAMES = "text | prompt/completion | instruction/input/output | messages"


def _present(value) -> bool:
    return value is not None and not (isinstance(value, (list, str)) and len(value) == 0)


def row_format(row: dict, forced: str = "auto") -> str | None:
    """The format of one raw row: ``forced``, or with ``auto`` the first of FORMATS whose fields it has."""
    for fmt in (FORMATS if forced == "auto" else (forced,)):
        if fmt == "messages" and isinstance(row.get("messages"), list) and row["messages"]:
            return fmt
        if fmt == "prompt_completion" and row.get("prompt") is not None and row.get("completion") is not None:
            return fmt
        if fmt == "instruction" and isinstance(row.get("instruction"), str) and row.get("output") is not None:
            return fmt
        if fmt == "text" and isinstance(row.get("text"), str):
            return fmt
    return None


def _messages(value, where: str) -> list[dict]:
    """A list of {role, content} (ShareGPT {from, value} converted); one line naming the message if malformed."""
    if not isinstance(value, list):
        raise DataError(f"{where}: expected a list of messages, found {type(value).__name__}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise DataError(f"{where}: message {i} is a {type(m).__name__}, not a {{role, content}} object")
        role, content = m.get("role"), m.get("content")
        if role is None and m.get("from") is not None:  # ShareGPT
            role, content = SHAREGPT_ROLES.get(str(m["from"]), str(m["from"])), m.get("value")
        if role not in ROLES:
            raise DataError(f"{where}: message {i} has role {role!r}; use one of {'/'.join(ROLES)}")
        if not isinstance(content, str):
            raise DataError(f"{where}: message {i} ({role}) has no text content (found {type(content).__name__})")
        out.append({"role": role, "content": content})
    return out


class Example:
    """One row as what is trained: ``text``; or ``prompt`` + ``completion`` strings; or ``messages``."""

    __slots__ = ("text", "prompt", "completion", "messages")

    def __init__(self, text=None, prompt=None, completion=None, messages=None):
        self.text, self.prompt, self.completion, self.messages = text, prompt, completion, messages

    @property
    def response(self) -> str:
        """What the row teaches the model to write (empty: nothing to learn)."""
        if self.text is not None:
            return self.text
        if self.messages is not None:
            return "".join(m["content"] for m in self.messages if m["role"] == "assistant")
        return self.completion


def example(row: dict, forced: str, where: str) -> Example:
    """The row as an Example; a row of no format is one DataError line naming it."""
    fmt = row_format(row, forced)
    if fmt is None:
        present = sorted(k for k in COLUMNS if _present(row.get(k)))
        wanted = FORMAT_NAMES if forced == "auto" else forced
        raise DataError(f"{where}: not a {wanted} row (its fields: {present or 'none'}); fix the row, or name your "
                        f"columns with data.columns.<field>=<column>")
    if fmt == "text":
        return Example(text=row["text"])
    if fmt == "instruction":
        extra = row.get("input")
        user = row["instruction"] + (f"\n\n{extra}" if isinstance(extra, str) and extra.strip() else "")
        return Example(messages=[{"role": "user", "content": user},
                                 {"role": "assistant", "content": str(row["output"])}])
    if fmt == "messages":
        return Example(messages=_messages(row["messages"], where))
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, list) or isinstance(completion, list):  # TRL conversational prompt-completion
        as_list = (lambda v: v if isinstance(v, list) else [{"role": "user", "content": str(v)}])
        return Example(messages=_messages(as_list(prompt), where) + _messages(
            completion if isinstance(completion, list) else [{"role": "assistant", "content": str(completion)}],
            where))
    return Example(prompt=str(prompt), completion=str(completion))


# -- chat templates ----------------------------------------------------------------------------------------------
def load_template(name: str) -> dict:
    """conf/chat_template/<name>.yaml (or a path to such a file): {template, special_tokens}."""
    path = Path(name).expanduser() if str(name).endswith((".yaml", ".yml")) else CONF_DIR / "chat_template" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONF_DIR / "chat_template").glob("*.yaml"))
        raise ConfigError(f"task.chat_template={name}: no such template; use one of {known} or a path to a .yaml "
                          f"file with template and special_tokens")
    spec = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(spec.get("template"), str):
        raise ConfigError(f"{path}: needs a 'template' (Jinja text, as tokenizer.chat_template)")
    return {"template": spec["template"], "special_tokens": list(spec.get("special_tokens") or [])}


def install_template(tokenizer, model, name: str, prefer_model: bool) -> dict:
    """Give ``tokenizer`` a chat template: the model's own when it has one (and ``prefer_model``), else
    conf/chat_template/<name>.yaml, whose special tokens are added and the embeddings resized to them (new rows start
    at the mean embedding and are trained). Generation stops at the end-of-turn token from now on. Returns facts."""
    source = "model"
    added = []
    if not (prefer_model and tokenizer.chat_template):
        spec = load_template(name)
        vocab = tokenizer.get_vocab()
        added = [t for t in spec["special_tokens"] if t not in vocab]
        if added:
            tokenizer.add_special_tokens({"extra_special_tokens": added}, replace_extra_special_tokens=False)
        tokenizer.chat_template = spec["template"]
        source = name
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    eot = end_of_turn(tokenizer)
    if eot is None:
        raise ConfigError(f"the chat template ({source}) ends assistant turns with no special token, so generation "
                          f"could never stop; use task.chat_template=chatml task.prefer_model_template=false")
    stops = stop_ids(tokenizer)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
    log.info("chat template: %s; end of turn %r; added tokens %s", source, eot, added or "none")
    return {"chat_template": source, "end_of_turn": eot, "added_tokens": added,
            "new_token_ids": tokenizer.convert_tokens_to_ids(added) if added else []}


def render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as e:  # jinja TemplateError (e.g. roles that must alternate): one line
        raise DataError(f"the chat template cannot render this conversation ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160]}); roles: {[m['role'] for m in messages]}") from None


def _special_ids(tokenizer) -> set:
    return set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}


def end_of_turn(tokenizer) -> str | None:
    """The first special token the template writes after an assistant message's text (``<|im_end|>``,
    ``<|eot_id|>``, ``</s>`` ...), or None when it writes none."""
    if not tokenizer.chat_template:
        return None
    turn = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Fine"}]
    full = render(tokenizer, turn, False)
    after = full[full.rfind("Fine") + len("Fine"):]
    specials = _special_ids(tokenizer)
    for i in tokenizer(after, add_special_tokens=False)["input_ids"]:
        if i in specials:
            return tokenizer.convert_ids_to_tokens(i)
    return None


def stop_ids(tokenizer) -> list[int]:
    """Token ids that end a generation: the end-of-turn token of the template, then EOS."""
    ids = []
    eot = end_of_turn(tokenizer)
    for tok in (eot, tokenizer.eos_token):
        if tok is not None and tokenizer.convert_tokens_to_ids(tok) not in ids:
            ids.append(tokenizer.convert_tokens_to_ids(tok))
    return ids


def assistant_spans(tokenizer, messages: list[dict], eot: str | None) -> tuple[str, list[tuple[int, int]]]:
    """(rendered conversation, character spans of the assistant turns, each up to and including its end-of-turn
    token). A turn's span is what rendering up to it adds after rendering the turns before it with the generation
    prompt; a template that does not render a conversation's beginning as a prefix of the whole is refused."""
    full = render(tokenizer, messages, False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], True)
        upto = render(tokenizer, messages[:i + 1], False)
        if not (full.startswith(upto) and upto.startswith(before)):
            raise ConfigError("the chat template does not render the start of a conversation as a prefix of the whole "
                              "(it rewrites earlier turns), so the assistant turns cannot be located; use "
                              "task.chat_template=chatml task.prefer_model_template=false")
        end = len(upto)
        if eot and upto.rfind(eot) >= len(before):
            end = upto.rfind(eot) + len(eot)  # not the newline a template may write after the end-of-turn token
        spans.append((len(before), end))
    return full, spans


def encode(tokenizer, ex: Example, train_on: str, eos_id: int, eot: str | None) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one example; labels are -100 where nothing is trained (and at the first token, which
    nothing predicts: packed examples never learn across their boundary)."""
    if ex.text is not None:
        ids = tokenizer(ex.text, add_special_tokens=False)["input_ids"] + [eos_id]
        labels = list(ids)
    else:
        if ex.messages is not None:
            text, spans = assistant_spans(tokenizer, ex.messages, eot)
            tail = []
        else:
            text, spans, tail = ex.prompt + ex.completion, [(len(ex.prompt), len(ex.prompt) + len(ex.completion))], [eos_id]
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"] + tail
        keep = [train_on == "all" or any(s <= start < e for s, e in spans) for start, _ in enc["offset_mapping"]]
        labels = [i if k else -100 for i, k in zip(ids, keep)] + tail
    if labels:
        labels[0] = -100
    return ids, labels


# -- generation ---------------------------------------------------------------------------------------------------
def generate_from_ids(model, tokenizer, input_ids: list[list[int]], gen: dict, batch_size: int = 8,
                      progress: bool = False) -> list[str]:
    """Decoder LM: continue each prompt (token ids), left-padded batches; returns only the new text, cut at the
    first stop token (``gen['eos_token_id']``, else the model's)."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    stops = gen.get("eos_token_id", model.generation_config.eos_token_id)
    stops = set(stops if isinstance(stops, list) else [stops] if stops is not None else [])
    rows = [ids or [start] for ids in input_ids]  # an empty prompt starts from BOS
    out = []
    for chunk in batches(rows, batch_size, progress, "generate"):
        width = max(len(r) for r in chunk)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in chunk], device=model.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in chunk], device=model.device)
        with torch.no_grad():
            seq = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad, **gen)
        for new in seq[:, width:].tolist():
            end = next((i for i, t in enumerate(new) if t in stops), len(new))
            out.append(tokenizer.decode(new[:end], skip_special_tokens=True))
    return out
