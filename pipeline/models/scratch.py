"""init=scratch: a tokenizer of the family's kind trained on the training split, and a tiny model of the same
architecture built from config. This is what tests and debug=smoke use, so every recipe runs offline."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import datasets
import transformers
from datasets.fingerprint import Hasher
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from pipeline.families import Family, scratch_config_kwargs

BPE_SPECIALS = {  # byte-level BPE families: (special tokens in id order, wrapper kwargs)
    "gpt2": (["<|endoftext|>"], {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                                 "unk_token": "<|endoftext|>"}),
    "llama": (["<unk>", "<s>", "</s>"], {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}),
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
    return PreTrainedTokenizerFast.from_pretrained(str(path))  # loaded from disk in every run: one hash


def _train_tokenizer(family: Family, texts, vocab_size: int):
    """Train a fast tokenizer of ``family.tokenizer_kind`` on ``texts`` (an iterable of strings)."""
    kind = family.tokenizer_kind
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


def build_config(family: Family, tokenizer, scratch: dict, task_kwargs: dict):
    """The family's config class at the tiny ``model.scratch`` sizes, with the tokenizer's special ids."""
    kwargs = scratch_config_kwargs(family, scratch)
    specials = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id}
    kwargs.update({k: v for k, v in specials.items() if v is not None})
    if family.arch == "encoder-decoder":
        kwargs.setdefault("decoder_start_token_id", kwargs.get("pad_token_id"))
    return getattr(transformers, family.config_class)(vocab_size=len(tokenizer), **kwargs, **task_kwargs)
