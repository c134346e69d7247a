"""Translation with encoder-decoder models: a sentence in ``task.source_lang`` -> ``task.target_lang``, sacreBLEU
BLEU and chrF on generated translations.

Rows hold one key per language (``{"en": ..., "de": ...}``); the Hub's nested ``{"translation": {"en": ...,
"de": ...}}`` is flattened. T5 checkpoints were trained with ``translate English to German: ``: ``task.source_prefix:
auto`` builds it from the language names for families that take a task prefix (none for BART).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from omegaconf import MISSING

from pipeline.data import synthetic as gen
from pipeline.errors import ConfigError, DataError
from pipeline.families import model_family, task_prefix
from pipeline.metrics import load_metric
from pipeline.tasks import seq2seq
from pipeline.tasks.seq2seq import Seq2SeqTask

log = logging.getLogger(__name__)

LANGUAGES = {"en": "English", "de": "German", "fr": "French", "ro": "Romanian", "es": "Spanish", "it": "Italian",
             "pt": "Portuguese", "nl": "Dutch", "cs": "Czech", "ru": "Russian", "zh": "Chinese", "ja": "Japanese",
             "fi": "Finnish", "tr": "Turkish", "et": "Estonian", "lv": "Latvian", "lt": "Lithuanian", "hi": "Hindi",
             "gu": "Gujarati", "kk": "Kazakh", "pl": "Polish", "sv": "Swedish", "da": "Danish", "ar": "Arabic",
             "ko": "Korean", "uk": "Ukrainian"}

# Generated data: a tiny deterministic "German" for generated English, word by word with number agreement (plural
# nouns, verb forms and adjective endings change in both languages), so stems and endings recur across words and the
# scratch Unigram tokenizer keeps them as pieces (words seen in one form only end up as characters). Test sentences
# use held-out sentence shapes (pool()); the words are shared: a word training never translates cannot be learned.
NOUNS = {  # English singular: English plural, German singular, German plural
    "fox": ("foxes", "Fuchs", "Füchse"), "dog": ("dogs", "Hund", "Hunde"), "cat": ("cats", "Katze", "Katzen"),
    "horse": ("horses", "Pferd", "Pferde"), "owl": ("owls", "Eule", "Eulen"), "bear": ("bears", "Bär", "Bären"),
    "crow": ("crows", "Krähe", "Krähen"), "river": ("rivers", "Fluss", "Flüsse"), "house": ("houses", "Haus", "Häuser"),
    "stone": ("stones", "Stein", "Steine"), "tree": ("trees", "Baum", "Bäume"), "road": ("roads", "Straße", "Straßen"),
    "boat": ("boats", "Boot", "Boote"), "garden": ("gardens", "Garten", "Gärten")}
VERBS = {  # English 3rd person singular, plural; German singular, plural (present tense)
    "watch": ("watches", "watch", "sieht", "sehen"), "follow": ("follows", "follow", "folgt", "folgen"),
    "find": ("finds", "find", "findet", "finden"), "chase": ("chases", "chase", "jagt", "jagen"),
    "greet": ("greets", "greet", "grüßt", "grüßen"), "like": ("likes", "like", "mag", "mögen")}
ADJECTIVES = {"small": "klein", "old": "alt", "quiet": "ruhig", "bright": "hell", "lazy": "faul", "clever": "klug",
              "brave": "mutig", "tired": "müd"}
PLACES = {"near": "bei", "behind": "hinter", "under": "unter"}
WORDS = {".": ".", "and": "und", "again": "wieder", "today": "heute", "quickly": "schnell"}
def row_key(code: str) -> str:
    """The row key of a language code: the code, or the language part of a multilingual tokenizer's code with a
    region or script (en_XX, de_DE, eng_Latn -> en, de, eng)."""
    return code.replace("-", "_").split("_")[0] if "_" in code.replace("-", "_") else code


def language_token(tokenizer, code: str) -> str | None:
    """The tokenizer's token of language ``code`` (mBART ``en_XX``, NLLB ``eng_Latn``, M2M100 ``__en__``), or None."""
    vocab = tokenizer.get_vocab()
    for token in (code, f"__{code}__"):
        if token in vocab:
            return token
    extended = [t for t in vocab if t.startswith(f"{code}_") and len(t) == len(code) + 3]  # en -> en_XX (mBART)
    return extended[0] if len(extended) == 1 else None


def set_languages(tokenizer, model, src: str, tgt: str, quiet: bool = False) -> None:
    """Multilingual tokenizers (a ``src_lang`` attribute): set src_lang / tgt_lang and the target language token
    generation starts with; a code the tokenizer lacks is one error line. Other tokenizers: nothing to set."""
    if not hasattr(tokenizer, "src_lang"):
        return
    tokens = {c: language_token(tokenizer, c) for c in (src, tgt)}
    missing = [c for c, t in tokens.items() if t is None]
    if missing:
        codes = sorted(t for t in tokenizer.get_vocab() if len(t) in (5, 8) and "_" in t)[:8]
        raise ConfigError(f"task.source_lang/target_lang={missing[0]!r} is not a language code of this multilingual "
                          f"tokenizer ({type(tokenizer).__name__}); use its codes, e.g. {', '.join(codes) or 'en_XX'}")
    forced = tokenizer.convert_tokens_to_ids(tokens[tgt])
    # the tokenizers take the code they name (mBART en_XX, NLLB eng_Latn, M2M100 en for its __en__ token)
    src, tgt = (c if tokens[c] == f"__{c}__" else tokens[c] for c in (src, tgt))
    tokenizer.src_lang, tokenizer.tgt_lang = src, tgt
    # generation settings live in generation_config only: transformers 5 refuses to generate with them on model.config
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.forced_bos_token_id = forced
    if model.config.model_type == "mbart" and type(tokenizer).__name__.startswith("MBartTokenizer"):
        model.config.decoder_start_token_id = forced  # mBART (cc25): the decoder starts with the target code
        if gen is not None:
            gen.decoder_start_token_id = forced
    if not quiet:
        log.info("translation: src_lang=%s tgt_lang=%s forced_bos_token_id=%d", src, tgt, forced)


# sentence shapes: S = subject, V = verb (agrees with S), O = object, P = place phrase
SHAPES = ["S V O .", "S V O P .", "P S V O .", "S V O and O .", "S and S V O .", "S V O again .",
          "today S V O .", "S V O P again .", "P S V O and O .", "S quickly V O ."]


def noun_phrase(rng):
    """('the' [adjective] noun) in English and German, and whether it is plural."""
    noun, plural = rng.choice(sorted(NOUNS)), rng.random() < 0.5
    en_pl, de_sg, de_pl = NOUNS[noun]
    adj = rng.choice(sorted(ADJECTIVES)) if rng.random() < 0.5 else None
    en = ["the"] + ([adj] if adj else []) + [en_pl if plural else noun]
    de = ["die" if plural else "der"] + ([ADJECTIVES[adj] + ("en" if plural else "e")] if adj else []) + \
        [de_pl if plural else de_sg]
    return en, de, plural


@dataclass
class Config(seq2seq.Config):
    source_lang: str = MISSING        # a language code: en (the row key), or a multilingual one: en_XX (rows: en)
    target_lang: str = MISSING        # de, or de_DE / deu_Latn: the target language token the generation starts with
    source_prefix: str = MISSING      # auto: "translate English to German: " for T5-style families, none for BART


class TranslationTask(Seq2SeqTask):
    name = "translation"
    Config = Config
    pipeline_tag = "translation"
    card_metric_type = "bleu"
    output_field = "translation"

    def __init__(self, cfg):
        super().__init__(cfg)
        src, tgt = self.columns
        if src == tgt:
            raise ConfigError(f"task.source_lang and task.target_lang are both {src!r}; give two languages (row keys)")
        self.prefix = self._prefix(src, tgt)  # checked now: before any data or model work

    def _prefix(self, src: str, tgt: str) -> str:
        p = self.tcfg.source_prefix
        if p != "auto":
            return p or ""
        own = task_prefix(self.cfg.model, f"translation_{src}_to_{tgt}")
        if own is not None:
            return own  # the checkpoint's own (t5-small: "translate English to German: ")
        if not model_family(self.cfg.model).source_prefix:  # a type trained without prefixes (BART, Marian)
            return ""
        unknown = [c for c in (src, tgt) if c not in LANGUAGES]
        if unknown:
            raise ConfigError(f"task.source_prefix=auto does not know the language name of {unknown[0]!r} (known: "
                              f"{', '.join(sorted(LANGUAGES))}); set task.source_prefix='translate X to Y: '")
        return f"translate {LANGUAGES[src]} to {LANGUAGES[tgt]}: "

    # -- row keys follow the config ------------------------------------------------------------------------------
    @property
    def columns(self) -> tuple:
        """Row keys: the language codes, a multilingual code's language part (en_XX, en-US -> en)."""
        return tuple(row_key(str(c)) for c in (self.tcfg.source_lang, self.tcfg.target_lang))

    @property
    def input_fields(self) -> tuple:
        return (self.columns[0],)

    @property
    def input_aliases(self) -> dict:
        return {self.columns[0]: ("text", "source")}

    # -- multilingual checkpoints (mBART, mBART-50, NLLB, M2M100) ----------------------------------------------------
    def adapt(self, tokenizer, model) -> None:
        """A multilingual tokenizer takes the language codes: ``src_lang`` / ``tgt_lang`` tag source and target,
        and generation starts with the target language token (``forced_bos_token_id``; mBART's decoder starts with
        it too), as transformers' run_translation.py sets them."""
        set_languages(tokenizer, model, str(self.tcfg.source_lang), str(self.tcfg.target_lang))

    # -- data --------------------------------------------------------------------------------------------------
    def synthetic_row(self, rng, split):
        en, de, plural = [], [], False
        shape = rng.choice(gen.pool(SHAPES, split)).split()
        if "and" in shape and shape.index("and") < shape.index("V"):  # "S and S": a plural subject
            plural = None
        for part in shape:
            if part in ("S", "O"):
                n_en, n_de, pl = noun_phrase(rng)
                en += n_en
                de += n_de
                if part == "S" and plural is not None:
                    plural = pl
            elif part == "V":
                forms = VERBS[rng.choice(sorted(VERBS))]
                en.append(forms[0] if plural is False else forms[1])
                de.append(forms[2] if plural is False else forms[3])
            elif part == "P":
                place = rng.choice(sorted(PLACES))
                n_en, n_de, _ = noun_phrase(rng)
                en += [place] + n_en
                de += [PLACES[place]] + n_de
            else:
                en.append(part)
                de.append(WORDS[part])
        src, tgt = self.columns
        return {src: " ".join(en), tgt: " ".join(de)}

    def raw_rows(self, split, d):
        """The Hub's ``translation`` column ({lang: text} per row) becomes one column per language."""
        if "translation" not in d.column_names or set(self.columns) <= set(d.column_names):
            return d
        feature = d.features["translation"]
        keys = sorted(getattr(feature, "languages", None) or (feature.keys() if isinstance(feature, dict) else []))
        missing = [c for c in self.columns if c not in keys]
        if missing:
            raise DataError(f"split '{split}': the translation column has languages {keys}, not {missing[0]!r}; set "
                            f"task.source_lang / task.target_lang to two of them")
        src, tgt = self.columns
        return d.map(lambda b: {src: [t[src] for t in b["translation"]], tgt: [t[tgt] for t in b["translation"]]},
                     batched=True, remove_columns=["translation"], desc="flatten translation pairs")

    def sources(self, batch):
        return [self.prefix + str(s) for s in batch[self.columns[0]]]

    def targets(self, batch):
        return [str(t) for t in batch[self.columns[1]]]

    def score(self, predictions, references):
        return load_metric("sacrebleu").compute(predictions=predictions, references=references)

    def sample_row(self, row, generated):
        src, tgt = self.columns
        return {src: row[src], "reference": row[tgt], "generated": generated}

    def predict(self, model, tokenizer, rows, batch_size=8, progress=False, generation=None, **options):
        set_languages(tokenizer, model, str(self.tcfg.source_lang), str(self.tcfg.target_lang), quiet=True)
        src = self.columns[0]
        batch = {src: [r[src] for r in rows]}
        return self.generate(model, tokenizer, self.sources(batch), self.generation_settings(generation),
                             batch_size, progress)


TASK_CLASS = TranslationTask
