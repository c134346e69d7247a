"""Model stage: tokenizer + model for the task, from a hub id, a local path, or built from config (scratch)."""

from __future__ import annotations

import json
import logging
import os

import transformers
from transformers import AutoTokenizer

from pipeline.errors import ModelError
from pipeline.families import family_types, model_family
from pipeline.models import methods
from pipeline.models.scratch import build_config, train_tokenizer
from pipeline.util.paths import resolve_pkg_path

log = logging.getLogger(__name__)


def _load_error(name: str, e: Exception) -> ModelError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    if os.path.sep in name or name.startswith("."):
        why = "no such directory" if not os.path.exists(name) else f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        return ModelError(f"model.name_or_path={name}: cannot load ({why}); give a directory holding config.json")
    why = "offline (HF_HUB_OFFLINE=1) and not in the local cache" if offline else str(e).splitlines()[0][:160]
    return ModelError(f"model.name_or_path={name}: cannot load from the Hub ({why}); use a local path, "
                      f"model=minilm-offline, or model.init=scratch")


def byte_level(tokenizer) -> bool:
    """Whether a fast tokenizer pre-tokenizes byte-level (GPT-2 / RoBERTa / BART BPE), read from its pipeline."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    state = json.loads(backend.to_str()).get("pre_tokenizer") or {}
    parts = state.get("pretokenizers") or [state]
    return any(p.get("type") == "ByteLevel" for p in parts if isinstance(p, dict))


def load_tokenizer(mcfg, task):
    path = resolve_pkg_path(mcfg.name_or_path)
    kwargs = {"revision": mcfg.revision, "trust_remote_code": bool(mcfg.trust_remote_code)}
    try:
        tok = AutoTokenizer.from_pretrained(path, **kwargs)
        if task.pretokenized and byte_level(tok) and not getattr(tok, "add_prefix_space", False):
            # byte-level BPE with pre-split words: each word needs the space it had in running text
            tok = AutoTokenizer.from_pretrained(path, add_prefix_space=True, **kwargs)
            log.info("model: %s tokenizes byte-level; add_prefix_space=true for pre-split words", mcfg.name_or_path)
        return tok
    except Exception as e:
        raise _load_error(str(mcfg.name_or_path), e) from e


def named_tokenizer(mcfg, task):
    """init=scratch with a named model: that model's tokenizer when it loads without the network (a local folder, a
    cached hub id), else None (a tokenizer is trained on the data)."""
    if not mcfg.get("name_or_path"):
        return None

    family = model_family(mcfg)
    path = os.path.expanduser(resolve_pkg_path(str(mcfg.name_or_path)))
    kwargs = dict(revision=mcfg.revision, local_files_only=True, trust_remote_code=bool(mcfg.trust_remote_code))
    try:
        tok = AutoTokenizer.from_pretrained(path, **kwargs)
        if task.pretokenized and byte_level(tok) and not getattr(tok, "add_prefix_space", False):
            tok = AutoTokenizer.from_pretrained(path, add_prefix_space=True, **kwargs)  # pre-split words
    except Exception as e:  # not at hand offline: train one, as without a name
        log.info("model.init=scratch: the tokenizer of %s is not loadable here (%s); training one on the data",
                 mcfg.name_or_path, type(e).__name__)
        return None
    log.info("model.init=scratch: a tiny %s from config with the tokenizer of %s (%d tokens)", family.name,
             mcfg.name_or_path, len(tok))
    return tok


def load(cfg, task, raw):
    """Returns (tokenizer, model). ``task.prepare(raw)`` must have run (label maps)."""
    mcfg = cfg.model
    family = model_family(mcfg)
    auto = getattr(transformers, task.auto_class)
    if mcfg.trust_remote_code:
        log.warning("trust_remote_code=true: code from %s will run", mcfg.name_or_path)
    common = {"attn_implementation": mcfg.attn_implementation} if mcfg.attn_implementation else {}
    if mcfg.init == "scratch":
        tokenizer = named_tokenizer(mcfg, task)
        if tokenizer is None:
            tokenizer = train_tokenizer(family, task.tokenizer_corpus(raw), int(mcfg.scratch.vocab_size))
        config = build_config(family, tokenizer, dict(mcfg.scratch), task.model_kwargs())
        transformers.set_seed(int(cfg.seed))  # right before every construction: the same weights for the same seed
        model = _with_attn_fallback(lambda **kw: auto.from_config(config, **kw), common)
    elif mcfg.init == "pretrained":
        tokenizer = load_tokenizer(mcfg, task)
        path = resolve_pkg_path(mcfg.name_or_path)
        try:
            config = transformers.AutoConfig.from_pretrained(path, revision=mcfg.revision,
                                                             trust_remote_code=bool(mcfg.trust_remote_code))
        except Exception as e:
            raise _load_error(str(mcfg.name_or_path), e) from e
        if config.model_type not in family_types(family.name):  # resolve read this config: the folder changed
            raise ModelError(f"model.name_or_path={mcfg.name_or_path} is now a '{config.model_type}' checkpoint, "
                             f"not the '{family.name}' the run was checked for; run again")
        kwargs = dict(revision=mcfg.revision, trust_remote_code=bool(mcfg.trust_remote_code),
                      dtype=mcfg.dtype or None, **task.model_kwargs(),
                      use_safetensors=None if mcfg.get("allow_pickle_weights") else True)  # no unpickling
        kwargs.update(methods.load_kwargs(cfg.method))  # QLoRA: 4-bit base (check refused it without CUDA)
        if task.replaces_head:
            kwargs["ignore_mismatched_sizes"] = True  # a checkpoint's own task head is replaced by ours
        transformers.set_seed(int(cfg.seed))  # the new task head's initial weights: the same for the same seed
        model, info = _with_attn_fallback(
            lambda **kw: auto.from_pretrained(path, **kwargs, **kw, output_loading_info=True), common)
        # modules the checkpoint did not hold (initialised here: the task head, DeBERTa's pooler, DistilBERT's
        # pre_classifier): a PEFT method trains and saves them whole, or a reload would draw them afresh
        model.__dict__["pipeline_new_modules"] = sorted({k.rsplit(".", 1)[0] for k in info.get("missing_keys", ())
                                                         if "." in k})
    else:
        raise ModelError(f"model.init={mcfg.init}: use pretrained or scratch")
    _ensure_eos_token(tokenizer, model, task)
    _ensure_pad_token(tokenizer, model)
    _fit_embeddings(tokenizer, model)
    _ensure_decoder_start(tokenizer, model)
    return tokenizer, model


def _ensure_eos_token(tokenizer, model, task):
    """Causal-LM tasks end each example with EOS; a decoder tokenizer without one (openai-gpt's has only <unk>) gets
    an end-of-text token added (its embedding row is new)."""
    if tokenizer.eos_token is not None or task.auto_class != "AutoModelForCausalLM":
        return
    tokenizer.add_special_tokens({"eos_token": "<|endoftext|>"})
    model.config.eos_token_id = tokenizer.eos_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    log.info("model: the tokenizer has no EOS token; added <|endoftext|> (id %d) to end examples",
             tokenizer.eos_token_id)


def _fit_embeddings(tokenizer, model):
    """A tokenizer longer than the embedding matrix (its class adds a pad token the checkpoint's vocabulary lacks, an
    EOS added above) would index past it: the embeddings grow to the tokenizer (new rows)."""
    emb = model.get_input_embeddings()
    if emb is not None and len(tokenizer) > emb.num_embeddings:
        log.info("model: the tokenizer has %d tokens, the embeddings %d rows; resizing the embeddings",
                 len(tokenizer), emb.num_embeddings)
        # the new rows: LoRA-type methods train and save them with the adapter (methods.apply, trainable tokens)
        model.__dict__["pipeline_new_rows"] = list(range(emb.num_embeddings, len(tokenizer)))
        model.resize_token_embeddings(len(tokenizer))


def _ensure_decoder_start(tokenizer, model):
    """Encoder-decoders need the decoder's first token; a checkpoint without one (in config or generation config)
    starts from the pad token (T5 / Marian convention), else EOS (BART / mBART)."""
    if not getattr(model.config, "is_encoder_decoder", False):
        return
    gen = getattr(model, "generation_config", None)
    start = model.config.decoder_start_token_id
    if start is None and gen is not None:
        start = gen.decoder_start_token_id
    if start is None:
        start = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        log.info("model: no decoder_start_token_id in the checkpoint; starting the decoder from token %s", start)
    model.config.decoder_start_token_id = start
    if gen is not None and gen.decoder_start_token_id is None:
        gen.decoder_start_token_id = start


def _with_attn_fallback(build, common):
    try:
        return build(**common)
    except (ValueError, ImportError) as e:
        if "attn" not in str(e).lower() and "attention" not in str(e).lower():
            raise
        log.info("attn_implementation=%s not supported here (%s); using the default", common, e)
        return build()


def _ensure_pad_token(tokenizer, model):
    """GPT-2-style tokenizers have no pad token. Padding is only used for batched generation / eval here (causal-LM
    training packs full blocks), so pad = EOS is safe: EOS labels are never masked as padding."""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
