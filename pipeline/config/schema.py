"""Typed schema of the pipeline's own config keys: one dataclass per group (each task's ``Config`` is in
pipeline/tasks/). Types are the fields' annotations; ranges and choices are in each field's ``metadata``
(``at_least``, ``one_of``, ``gt`` / ``lt`` / ``max``). pipeline/config/typecheck.py checks a config against them, and the
keys a library class takes against that class's own fields. Keys a group holds that no schema names (e.g.
``data.dir``, used by interpolation) pass through unchecked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


def at_least(n, **more) -> dict:
    return {"min": n, **more}


def one_of(*choices) -> dict:
    return {"choices": choices}


SIZE = at_least(1)
FRACTION = {"min": 0.0, "lt": 1.0}
PERCENT = {"gt": 0.0, "lt": 100.0}


# -- the pipeline's own keys ---------------------------------------------------------------------------------------
@dataclass
class Hub:
    push: bool = False
    repo_id: Optional[str] = None
    private: bool = True


@dataclass
class Root:
    name: str = "run"
    output_root: str = "outputs"
    seed: int = field(default=0, metadata=at_least(0))
    do_train: bool = True
    do_eval: bool = True
    num_samples: int = field(default=8, metadata=at_least(0))
    resume: Any = None
    debug_errors: bool = False
    quiet: bool = False
    hub: Hub = field(default_factory=Hub)


@dataclass
class Scratch:
    model_type: Optional[str] = None  # the type init=scratch builds when no named model is at hand (any model_type)
    vocab_size: int = field(default=1000, metadata=at_least(16))
    hidden_size: int = field(default=32, metadata=SIZE)
    num_layers: int = field(default=2, metadata=SIZE)
    num_heads: int = field(default=2, metadata=SIZE)
    intermediate_size: int = field(default=64, metadata=SIZE)
    max_positions: Optional[int] = field(default=512, metadata=at_least(8))
    dropout: Optional[float] = field(default=None, metadata=FRACTION)


@dataclass
class Model:
    name_or_path: Optional[str] = None
    family: Optional[str] = None  # optional override; resolved to the checkpoint's config.model_type
    init: str = field(default="pretrained", metadata=one_of("pretrained", "scratch"))
    revision: Optional[str] = None
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False
    dtype: Optional[str] = field(default=None, metadata=one_of(None, "auto", "float32", "bfloat16", "float16"))
    attn_implementation: Optional[str] = None
    scratch: Scratch = field(default_factory=Scratch)


@dataclass
class Conll:
    token_column: int = 0
    tag_column: int = -1
    separator: Optional[str] = None


@dataclass
class Text:
    sample_by: str = field(default="paragraph", metadata=one_of("line", "paragraph", "document"))


@dataclass
class Synthetic:
    num_train: int = field(default=2000, metadata=at_least(3))
    num_validation: int = field(default=300, metadata=SIZE)
    num_test: int = field(default=300, metadata=SIZE)


SOURCES = ("auto", "hub", "conll", "json", "csv", "text", "synthetic")


@dataclass
class Data:
    source: str = field(default="auto", metadata=one_of(*SOURCES))
    path: Optional[str] = None
    config_name: Optional[str] = None
    revision: Optional[str] = None
    train_file: Optional[str] = None
    validation_file: Optional[str] = None
    test_file: Optional[str] = None
    columns: Dict[str, str] = field(default_factory=dict)
    conll: Conll = field(default_factory=Conll)
    text: Text = field(default_factory=Text)
    validation_split_percentage: float = field(default=10, metadata=PERCENT)
    test_split_percentage: float = field(default=10, metadata=PERCENT)
    max_train_samples: Optional[int] = field(default=None, metadata=SIZE)
    max_eval_samples: Optional[int] = field(default=None, metadata=SIZE)
    max_test_samples: Optional[int] = field(default=None, metadata=SIZE)
    num_proc: Optional[int] = field(default=None, metadata=SIZE)
    synthetic: Synthetic = field(default_factory=Synthetic)
    # several sources (pipeline/data/mixture.py): a list of {name, weight, format, train_file | path, ...}
    mixture: Optional[List[Any]] = None
    mix_strategy: str = field(default="concat", metadata=one_of("concat", "interleave"))
    mix_stopping: str = field(default="first_exhausted", metadata=one_of("first_exhausted", "all_exhausted"))
    mixture_best: Optional[str] = None
    # the training split as a stream (pipeline/data/streaming.py); needs trainer.max_steps
    streaming: bool = False
    stream_head: int = field(default=1000, metadata=SIZE)
    stream_shuffle_buffer: int = field(default=1000, metadata=at_least(0))
    stream_batch: int = field(default=256, metadata=SIZE)


@dataclass
class TrainerKeys:
    """The trainer group's pipeline keys; every other key is a TrainingArguments field (``library_fields``)."""
    global_batch_size: Optional[int] = field(default=None, metadata=SIZE)
    group_order: str = field(default="shuffled", metadata=one_of("shuffled", "sorted"))
    early_stopping_patience: Optional[int] = field(default=None, metadata=SIZE)
    early_stopping_threshold: float = field(default=0.0, metadata=at_least(0.0))


@dataclass
class MethodKeys:
    """The method group's pipeline keys (methods.PIPELINE_KEYS); the others are PEFT config fields."""
    name: str = "full"
    kind: Optional[str] = field(default=None, metadata=one_of(None, "full", "freeze", "peft"))
    peft_type: Optional[str] = None
    targets: Any = None
    lr_scale: float = field(default=1.0, metadata={"gt": 0.0})
    train_last_layers: int = field(default=0, metadata=at_least(0))
    load_in_4bit: bool = False


@dataclass
class Logger:
    name: str = field(default="none", metadata=one_of("none", "tensorboard", "mlflow", "wandb"))
    tracking_uri: Optional[str] = None
    experiment: Optional[str] = None
    log_artifacts: bool = True
    project: Optional[str] = None
    mode: str = field(default="offline", metadata=one_of("offline", "online", "disabled"))


@dataclass
class PreferenceSynthetic:
    num_train: int = field(default=256, metadata=at_least(2))
    num_test: int = field(default=32, metadata=SIZE)


@dataclass
class PreferenceData:
    source: str = field(default="auto", metadata=one_of("auto", "json", "csv", "hub", "synthetic"))
    path: Optional[str] = None
    config_name: Optional[str] = None
    data_dir: Optional[str] = None
    revision: Optional[str] = None
    train_file: Optional[str] = None
    test_file: Optional[str] = None
    test_split_percentage: float = field(default=10, metadata=PERCENT)
    columns: Dict[str, str] = field(default_factory=dict)
    response_marker: str = ""
    prompt_template: str = "{prompt}"
    max_train_samples: Optional[int] = field(default=None, metadata=SIZE)
    max_eval_samples: Optional[int] = field(default=None, metadata=SIZE)
    synthetic: PreferenceSynthetic = field(default_factory=PreferenceSynthetic)


@dataclass
class Reward:
    init: str = field(default="policy", metadata=one_of("policy", "pretrained", "scratch"))
    name_or_path: Optional[str] = None
    family: str = "gpt2"
    trainer: Dict[str, Any] = field(default_factory=dict)


@dataclass
class RlhfEval:
    num_prompts: int = field(default=64, metadata=SIZE)
    max_new_tokens: int = field(default=32, metadata=SIZE)
    batch_size: int = field(default=16, metadata=SIZE)


@dataclass
class RlhfGeneration:
    num_generations: int = field(default=4, metadata=at_least(2))
    max_completion_length: int = field(default=32, metadata=SIZE)
    temperature: float = field(default=1.0, metadata={"gt": 0.0})


@dataclass
class Rlhf:
    algorithm: str = field(default="grpo", metadata=one_of("reward", "grpo", "rloo", "dpo", "kto", "orpo"))
    policy_path: Optional[str] = None
    reward_path: Optional[str] = None
    beta: float = field(default=0.05, metadata={"gt": 0.0})
    data: PreferenceData = field(default_factory=PreferenceData)
    max_length: int = field(default=256, metadata=at_least(2))
    max_prompt_length: int = field(default=128, metadata=SIZE)
    reward: Reward = field(default_factory=Reward)
    trainer: Dict[str, Any] = field(default_factory=dict)
    eval: RlhfEval = field(default_factory=RlhfEval)
    generation: RlhfGeneration = field(default_factory=RlhfGeneration)
