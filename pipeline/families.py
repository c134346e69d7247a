"""Per-family facts: architecture kind, the tasks it can do, how to build a tiny one from config, PEFT targets.

Facts live in one table so no stage branches on family names. Add a family by adding a row. Which tasks an
architecture can do is each task's fact (``Task.archs``, pipeline/tasks/): this module imports no task.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.errors import ConfigError, ModelError

# Model files (conf/model/) of each architecture, named when a task needs another architecture. Which tasks an
# architecture can do is each task's fact (Task.archs, pipeline/tasks/).
MODELS_BY_ARCH = {
    "encoder": "an encoder (model=bert-base-cased, distilbert, roberta, minilm-offline)",
    "decoder": "a decoder (model=gpt2, distilgpt2, gpt2-medium)",
    "encoder-decoder": "an encoder-decoder (model=t5-small, t5-base, flan-t5-small, bart-base)",
}
# The family each architecture is tested with (tests/test_methods.py, the README compatibility table).
REPRESENTATIVE = {"encoder": "bert", "decoder": "gpt2", "encoder-decoder": "t5"}


@dataclass(frozen=True)
class Family:
    name: str
    arch: str                      # encoder | decoder | encoder-decoder
    config_class: str              # transformers config class used by init=scratch
    tokenizer_kind: str            # wordpiece | bpe | unigram: what init=scratch trains
    scratch_keys: dict             # model.scratch key -> config field name(s)
    scratch_extra: dict = field(default_factory=dict)
    lora_targets: tuple = ()       # attention projections (what LoRA papers adapt)
    mlp_targets: tuple = ()        # feed-forward projections
    add_prefix_space: bool = False  # byte-level BPE needs it for pre-split words (NER)
    lowercase: bool = False        # scratch tokenizer normalisation
    source_prefix: str = ""        # summarization input prefix the checkpoints were trained with
    model_types: tuple = ()        # config.model_type values that belong to this family
    fsdp_layers: tuple = ()        # transformer layer classes FSDP auto-wraps (those present in the model)
    dropout_keys: tuple = ()       # config fields model.scratch.dropout sets (0 for exact multi-process tests)


_BERT_KEYS = {"hidden_size": "hidden_size", "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
              "intermediate_size": "intermediate_size", "max_positions": "max_position_embeddings"}

FAMILIES = {f.name: f for f in [
    Family("bert", "encoder", "BertConfig", "wordpiece", _BERT_KEYS,
           lora_targets=("query", "value"), mlp_targets=("intermediate.dense", "output.dense"),
           lowercase=True, model_types=("bert",), fsdp_layers=("BertLayer",),
           dropout_keys=("hidden_dropout_prob", "attention_probs_dropout_prob")),
    Family("distilbert", "encoder", "DistilBertConfig", "wordpiece",
           {"hidden_size": "dim", "num_layers": "n_layers", "num_heads": "n_heads",
            "intermediate_size": "hidden_dim", "max_positions": "max_position_embeddings"},
           lora_targets=("q_lin", "v_lin"), mlp_targets=("lin1", "lin2"), model_types=("distilbert",),
           fsdp_layers=("TransformerBlock",), dropout_keys=("dropout", "attention_dropout")),
    Family("roberta", "encoder", "RobertaConfig", "bpe", _BERT_KEYS,
           scratch_extra={"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2},
           lora_targets=("query", "value"), mlp_targets=("intermediate.dense", "output.dense"),
           add_prefix_space=True, model_types=("roberta",), fsdp_layers=("RobertaLayer",),
           dropout_keys=("hidden_dropout_prob", "attention_probs_dropout_prob")),
    Family("gpt2", "decoder", "GPT2Config", "bpe",
           {"hidden_size": "n_embd", "num_layers": "n_layer", "num_heads": "n_head",
            "intermediate_size": "n_inner", "max_positions": "n_positions"},
           lora_targets=("c_attn",), mlp_targets=("c_fc", "mlp.c_proj"), add_prefix_space=True,
           model_types=("gpt2",), fsdp_layers=("GPT2Block",), dropout_keys=("resid_pdrop", "embd_pdrop", "attn_pdrop")),
    Family("llama", "decoder", "LlamaConfig", "bpe",
           {"hidden_size": "hidden_size", "num_layers": "num_hidden_layers",
            "num_heads": ("num_attention_heads", "num_key_value_heads"),
            "intermediate_size": "intermediate_size", "max_positions": "max_position_embeddings"},
           lora_targets=("q_proj", "v_proj"), mlp_targets=("gate_proj", "up_proj", "down_proj"),
           model_types=("llama", "mistral", "qwen2", "qwen3"),
           fsdp_layers=("LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer", "Qwen3DecoderLayer"),
           dropout_keys=("attention_dropout",)),
    Family("t5", "encoder-decoder", "T5Config", "unigram",
           {"hidden_size": "d_model", "num_layers": ("num_layers", "num_decoder_layers"), "num_heads": "num_heads",
            "intermediate_size": "d_ff"},
           scratch_extra={"d_kv": 16, "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0},
           lora_targets=("q", "v"), mlp_targets=("wi", "wo"), source_prefix="summarize: ",
           model_types=("t5", "mt5"), fsdp_layers=("T5Block", "MT5Block"), dropout_keys=("dropout_rate",)),
    Family("bart", "encoder-decoder", "BartConfig", "bpe",
           {"hidden_size": "d_model", "num_layers": ("encoder_layers", "decoder_layers"),
            "num_heads": ("encoder_attention_heads", "decoder_attention_heads"),
            "intermediate_size": ("encoder_ffn_dim", "decoder_ffn_dim"),
            "max_positions": "max_position_embeddings"},
           scratch_extra={"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2,
                          "forced_eos_token_id": 2},
           lora_targets=("q_proj", "v_proj"), mlp_targets=("fc1", "fc2"), add_prefix_space=True,
           model_types=("bart",), fsdp_layers=("BartEncoderLayer", "BartDecoderLayer"),
           dropout_keys=("dropout", "attention_dropout", "activation_dropout")),
]}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ConfigError(f"model.family={name!r} is not a known family; use one of {sorted(FAMILIES)} "
                          f"(pipeline/families.py)")
    return FAMILIES[name]


def check_model_type(family: Family, model_type: str, model_name: str) -> None:
    """The checkpoint's config.model_type must belong to the configured family (catches model.family typos)."""
    if family.model_types and model_type not in family.model_types:
        owner = next((f.name for f in FAMILIES.values() if model_type in f.model_types), None)
        fix = f"set model.family={owner}" if owner else "this architecture is not in pipeline/families.py"
        raise ModelError(f"model {model_name} is a '{model_type}' checkpoint but model.family={family.name}; {fix}")


def scratch_config_kwargs(family: Family, scratch: dict) -> dict:
    """Map the family-neutral ``model.scratch`` sizes to this family's config field names."""
    kwargs = dict(family.scratch_extra)
    for key, value in scratch.items():
        if key == "vocab_size" or value is None:
            continue
        names = family.dropout_keys if key == "dropout" else family.scratch_keys.get(key, ())
        for name in (names,) if isinstance(names, str) else names:
            kwargs[name] = value
    return kwargs
