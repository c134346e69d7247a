"""init=scratch: a tokenizer trained on the training split, and a tiny model of any model type built from config
(``AutoConfig.for_model`` at the generic ``model.scratch`` sizes). This is what tests and debug=smoke use, so every
recipe runs offline. The types of ``families.SCRATCH_TOKENIZERS`` train the tokenizers written here (kept for the
docs' smoke figures); every other type trains its own tokenizer class (transformers' TOKENIZER_MAPPING) on the data,
else a tokenizer of its kind (WordPiece for encoders, byte-level BPE for decoders, Unigram for encoder-decoders)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import datasets
import transformers
from datasets.fingerprint import Hasher
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast
from transformers.models.auto import tokenization_auto

from pipeline.families import Family, scratch_config_kwargs

log = logging.getLogger(__name__)
# The tokenizer kind of a type whose own class cannot train from nothing (the common kind of each architecture).
KIND_OF_ARCH = {"encoder": "wordpiece", "decoder": "bpe", "encoder-decoder": "unigram"}

BPE_SPECIALS = {  # byte-level BPE families: (special tokens in id order, wrapper kwargs)
    "gpt2": (["<|endoftext|>"], {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                                 "unk_token": "<|endoftext|>"}),
    **{t: (["<unk>", "<s>", "</s>"], {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"})
       for t in ("llama", "mistral", "qwen2", "qwen3")},
}
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def train_tokenizer(family: Family, texts, vocab_size: int):
    """A fast tokenizer of ``family.tokenizer_kind`` trained on ``texts`` (strings), cached on disk by a hash of
    (family, texts, vocab size). WordPiece / Unigram training breaks frequency ties in hash-map order, so two
    trainings on the same texts can number the vocabulary differently; reusing the first one keeps token ids, and
    with them the datasets cache of the tokenised data, the same across runs (the second run skips tokenisation)."""
    texts = list(texts)
    key = Hasher.hash([family.name, family.tokenizer_kind, family.lowercase, family.add_prefix_space, vocab_size,
                       texts])
    path = Path(datasets.config.HF_DATASETS_CACHE) / "pipeline_scratch_tokenizers" / key
    if not (path / "tokenizer.json").is_file():
        partial = path.with_name(f".{key}.{os.getpid()}.partial")
        _train_tokenizer(family, texts, vocab_size).save_pretrained(partial)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(partial, path)  # atomic: concurrent runs never read a half-written tokenizer
        except OSError:  # another run published it first
            shutil.rmtree(partial, ignore_errors=True)
    loader = PreTrainedTokenizerFast if family.tokenizer_kind else transformers.AutoTokenizer  # its own class back
    return loader.from_pretrained(str(path))  # loaded from disk in every run: one hash


def _train_tokenizer(family: Family, texts, vocab_size: int):
    """Train a fast tokenizer of ``family.tokenizer_kind`` on ``texts`` (an iterable of strings); for a type
    without one, its own tokenizer class retrained on them (``train_new_from_iterator``)."""
    kind = family.tokenizer_kind
    if kind is None:
        own = _own_class_trained(family, texts, vocab_size)
        if own is not None:
            return own
        kind = KIND_OF_ARCH[family.arch]
    if kind == "wordpiece":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=family.lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                                 show_progress=False))  # no output: quiet mode
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        wrap = dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    elif kind == "bpe":
        specials, wrap = BPE_SPECIALS.get(family.name, (ROBERTA_SPECIALS, dict(
            bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
            cls_token="<s>", sep_token="</s>")))
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=family.add_prefix_space and family.arch != "decoder")
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                           show_progress=False))
        if "cls_token" in wrap:  # RoBERTa / BART: <s> A </s>
            # positional: tokenizers 0.23 renamed the keyword cls= to cls_token=
            tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                              ("<s>", tok.token_to_id("<s>")))
        else:
            tok.post_processor = processors.ByteLevel(trim_offsets=False)
        if family.add_prefix_space:
            wrap["add_prefix_space"] = True
    elif kind == "unigram":
        specials = ["<pad>", "</s>", "<unk>"]  # T5 ids: pad 0, eos 1, unk 2
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                               unk_token="<unk>", show_progress=False))
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                           special_tokens=[("</s>", tok.token_to_id("</s>"))])
        wrap = dict(pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    else:
        raise ValueError(f"unknown tokenizer kind {kind}")
    return PreTrainedTokenizerFast(tokenizer_object=tok, **wrap)


def _own_class_trained(family: Family, texts, vocab_size: int):
    """The model type's own tokenizer class (transformers 5 builds its pipeline without files) retrained on
    ``texts``; None where the class needs vocabulary files to exist (CTRL) or the type names none (Llama)."""
    names = tokenization_auto.TOKENIZER_MAPPING_NAMES.get(family.name)
    cls = getattr(transformers, names, None) if isinstance(names, str) else None
    try:
        return cls().train_new_from_iterator(texts, vocab_size, show_progress=False) if cls is not None else None
    except Exception as e:  # noqa: BLE001 - any failure: a tokenizer of the type's kind instead
        log.info("model.init=scratch: %s cannot train from nothing (%s); a %s tokenizer instead", names,
                 type(e).__name__, KIND_OF_ARCH[family.arch])
        return None


def build_config(family: Family, tokenizer, scratch: dict, task_kwargs: dict):
    """The type's config (``AutoConfig.for_model``) at the tiny ``model.scratch`` sizes, with the tokenizer's
    special ids."""
    kwargs = scratch_config_kwargs(family, scratch)
    specials = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id}
    kwargs.update({k: v for k, v in specials.items() if v is not None})
    if family.arch == "encoder-decoder":
        kwargs.setdefault("decoder_start_token_id", kwargs.get("pad_token_id"))
    if family.arch == "encoder-decoder" and kwargs.get("decoder_start_token_id") is None:
        kwargs["decoder_start_token_id"] = tokenizer.eos_token_id  # no pad token either: start from EOS (BART-style)
    if family.arch == "decoder" and kwargs.get("pad_token_id") is None and tokenizer.eos_token_id is not None:
        kwargs["pad_token_id"] = tokenizer.eos_token_id
    return transformers.AutoConfig.for_model(family.name, vocab_size=len(tokenizer), **kwargs, **task_kwargs)
