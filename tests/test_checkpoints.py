"""Any checkpoint by its path: the lecture's architectures (encoder ALBERT, BERT, DistilBERT, ELECTRA, RoBERTa;
decoder CTRL, GPT, GPT-2; encoder-decoder BART, T5, Marian, mBART) and Llama-style decoders, each a tiny random
checkpoint saved the way a download is (config.json, model.safetensors, a fast tokenizer), loaded by path with no
model.family, fine-tuned a few steps full and with LoRA; metrics.json written, the saved model answers
(finetune-predict's Predictor) and a LoRA run merges (finetune-export --merge). Bad checkpoints are refused in one
line before any weights load.

Each checkpoint's tokenizer is the one init=scratch trains (pipeline/models/scratch.py: the type's own tokenizer
class where it trains from nothing, else one of its kind), saved with save_pretrained.
"""

import json

import pytest

from conftest import compose

TEXTS = [f"the old fox number {i} visited Paris and Berlin with Anna on Monday" for i in range(120)] + [
    "Der alte Fuchs besuchte Berlin", "What is the capital? Paris is the capital."]
SIZES = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "max_positions": 256}
ENCODERS = ("albert", "bert", "distilbert", "electra", "roberta")
DECODERS = ("ctrl", "openai-gpt", "gpt2", "qwen2", "qwen3", "llama", "mistral")
ENCODER_DECODERS = ("bart", "t5", "marian", "mbart")
TASKS = {"encoder": ("ner", "classification", "qa"), "decoder": ("generation",),
         "encoder-decoder": ("summarization", "translation", "generative-qa")}
FAST = ["debug=smoke", "model.init=pretrained", "trainer.max_steps=2", "num_samples=1", "quiet=true",
        "data.synthetic.num_train=16", "data.synthetic.num_validation=4", "data.synthetic.num_test=4",
        "trainer.per_device_train_batch_size=8", "trainer.global_batch_size=8", "trainer.per_device_eval_batch_size=8"]


def save_checkpoint(model_type: str, folder, **config_extra):
    """A tiny random ``model_type`` checkpoint in ``folder``: config + safetensors weights + a fast tokenizer."""
    import transformers

    from pipeline.families import get_family
    from pipeline.models.scratch import build_config, train_tokenizer

    family = get_family(model_type)
    tok = train_tokenizer(family, TEXTS, 300)
    config = build_config(family, tok, SIZES, config_extra)
    auto = {"encoder": transformers.AutoModel, "decoder": transformers.AutoModelForCausalLM,
            "encoder-decoder": transformers.AutoModelForSeq2SeqLM}[family.arch]
    transformers.set_seed(0)
    auto.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    made = {}

    def get(model_type, **extra):
        key = (model_type, tuple(sorted(extra)))
        if key not in made:
            made[key] = save_checkpoint(model_type, root / f"{model_type}-{len(made)}", **extra)
        return made[key]
    return get


def kind_of(model_type):
    return next(k for k, types in (("encoder", ENCODERS), ("decoder", DECODERS),
                                   ("encoder-decoder", ENCODER_DECODERS)) if model_type in types)


CASES = [(t, task) for group in (ENCODERS, DECODERS, ENCODER_DECODERS) for t in group
         for task in TASKS[kind_of(t)]]


def finetune(folder, task, method, run_dir, *extra):
    """``finetune task=<task> model.name_or_path=<folder> method=<method>`` in this process, leaving the run directory
    as the command does (.hydra/config.yaml as composed + the run's files)."""
    from omegaconf import OmegaConf

    from pipeline.stages.run import run

    cfg = compose([f"task={task}", f"model.name_or_path={folder}", f"method={method}", *FAST, *extra])
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return run(cfg, run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("model_type,task", CASES, ids=[f"{t}-{task}" for t, task in CASES])
def test_checkpoint_by_path_fine_tunes_full_and_lora_and_the_saved_model_answers(checkpoints, tmp_path, model_type,
                                                                                  task):
    from pipeline.commands.predict import Predictor
    from pipeline.models.saved import merge

    folder = checkpoints(model_type)
    for method in ("full", "lora"):
        run_dir = tmp_path / method
        m = finetune(folder, task, method, run_dir)
        saved = json.loads((run_dir / "metrics.json").read_text())
        assert saved["family"] == model_type and m["family"] == model_type  # the checkpoint's type, none given
        assert saved["method"] == method and any(k.startswith("test_") for k in saved)
    predictor = Predictor(run_dir)  # the LoRA run's model/ (adapter + base) answers
    row = {f: "the old fox visited Paris" for f in predictor.task.input_fields}  # every input field of the task
    preds = predictor.predict([row], batch_size=1, progress=False, generation={"max_new_tokens": 3})
    assert len(preds) == 1
    out, diff = merge(str(run_dir), str(tmp_path / "merged"))
    assert (tmp_path / "merged" / "config.json").is_file() and diff < 1e-3


# -- an architecture named nowhere: no code change ------------------------------------------------------------------
@pytest.mark.slow
def test_an_architecture_named_nowhere_fine_tunes_by_path_with_no_code_change(checkpoints, tmp_path):
    """MobileBERT (and XLM-RoBERTa's Unigram tokenizer) appear in no table of the pipeline: the checkpoint's config
    and the libraries' mappings are all it takes."""
    import pathlib

    import pipeline

    source = "\n".join(p.read_text() for p in pathlib.Path(pipeline.__file__).parent.rglob("*.py"))
    for model_type, task in (("mobilebert", "ner"), ("xlm-roberta", "classification")):
        assert model_type not in source
        for method in ("full", "lora"):
            m = finetune(checkpoints(model_type), task, method, tmp_path / f"{model_type}-{method}")
            assert m["family"] == model_type and (tmp_path / f"{model_type}-{method}" / "metrics.json").is_file()


# -- scratch models of any type -------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("model_type,task", [("electra", "ner"), ("albert", "classification"), ("ctrl", "generation"),
                                             ("qwen3", "generation"), ("marian", "translation"),
                                             ("mbart", "summarization")])
def test_scratch_builds_any_model_type_from_the_generic_sizes(tmp_path, model_type, task):
    import transformers
    from omegaconf import OmegaConf

    from pipeline.stages.run import run

    cfg = compose([f"task={task}", *FAST, "model.init=scratch", f"model.scratch.model_type={model_type}"])
    m = run(cfg, tmp_path)
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert m["family"] == model_type and saved["model_type"] == model_type
    config = transformers.AutoConfig.from_pretrained(tmp_path / "model")
    assert config.hidden_size == 32 and config.num_hidden_layers == 2  # generic names through attribute_map
    assert OmegaConf.select(cfg, "model.family") is None  # nothing but the scratch type was given


# -- bad checkpoints: one line, before any weights ------------------------------------------------------------------
def config_only(folder, **config):
    """A checkpoint folder holding only config.json: a refusal that comes from it happened before any weights load."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def refusal(overrides):
    from pipeline.errors import PipelineError
    from pipeline.stages.resolve import resolve

    with pytest.raises(PipelineError) as e:
        resolve(compose([*FAST, *overrides]))
    assert "\n" not in str(e.value)
    return str(e.value)


def test_a_folder_without_config_json_is_refused(tmp_path):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.safetensors").write_bytes(b"")
    assert "no config.json in that folder" in refusal([f"model.name_or_path={tmp_path / 'weights'}"])


def test_an_unknown_model_type_is_refused_naming_known_ones(tmp_path):
    why = refusal([f"model.name_or_path={config_only(tmp_path / 'm', model_type='zorblax')}"])
    assert "'zorblax' model, a type transformers" in why and "trust_remote_code" in why


def test_transformer_xl_is_refused_as_removed_from_transformers(tmp_path):
    why = refusal(["task=generation", f"model.name_or_path={config_only(tmp_path / 'm', model_type='transfo-xl')}"])
    assert "removed in 5" in why and "model=gpt2" in why


@pytest.mark.parametrize("model_type,task,can", [("marian", "ner", "generative-qa|summarization|translation"),
                                                 ("electra", "generation", "classification|ner|qa"),
                                                 ("layoutlm", "qa", "classification|ner")])
def test_a_type_that_cannot_do_the_task_is_refused_naming_the_tasks_it_can(tmp_path, model_type, task, can):
    import transformers

    folder = tmp_path / model_type
    transformers.AutoConfig.for_model(model_type).save_pretrained(folder)  # config only: no weights to load
    why = refusal([f"task={task}", f"model.name_or_path={folder}"])
    assert f"({model_type}" in why and f"cannot do task={task}" in why and f"task={can} with this model" in why


def test_an_explicit_family_contradicting_the_checkpoint_is_refused(tmp_path):
    import transformers

    folder = tmp_path / "bert"
    transformers.AutoConfig.for_model("bert").save_pretrained(folder)
    why = refusal([f"model.name_or_path={folder}", "model.family=gpt2"])
    assert "is a 'bert' checkpoint but model.family=gpt2" in why and "remove model.family" in why


@pytest.mark.slow
def test_a_refused_checkpoint_on_the_command_line_is_one_line_and_trains_nothing(tmp_path):
    from conftest import run_cli

    folder = config_only(tmp_path / "m", model_type="zorblax")
    r = run_cli(["task=ner", f"model.name_or_path={folder}", f"hydra.run.dir={tmp_path}/run"])
    # (torch's own import-time warnings on this machine's torchao are not ours: the pipeline's line is the last)
    ours = [line for line in r.stderr.strip().splitlines() if "site-packages" not in line]
    assert r.returncode != 0 and len(ours) == 1 and ours[0].startswith("error: "), r.stderr
    assert "zorblax" in r.stderr and not (tmp_path / "run" / "metrics.json").exists()  # a fresh folder: status only
    assert not (tmp_path / "run" / "model").exists()


# -- multilingual translation checkpoints ---------------------------------------------------------------------------
@pytest.mark.slow
def test_mbart_translation_takes_language_codes_and_generation_starts_with_the_target_token(checkpoints, tmp_path):
    import transformers

    folder = checkpoints("mbart")
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    assert hasattr(tok, "src_lang")  # mBART's own tokenizer class, as a download has it
    m = finetune(folder, "translation", "full", tmp_path, "task.source_lang=en_XX", "task.target_lang=de_DE")
    assert m["family"] == "mbart" and "test_bleu" in m  # rows keyed en / de: the codes' language parts
    gen = json.loads((tmp_path / "model" / "generation_config.json").read_text())
    de = tok.convert_tokens_to_ids("de_DE")
    assert gen["forced_bos_token_id"] == de and gen["decoder_start_token_id"] == de
    from pipeline.errors import ConfigError
    from pipeline.tasks.translation import set_languages

    with pytest.raises(ConfigError, match="'xx_YY' is not a language code of this multilingual tokenizer"):
        set_languages(tok, transformers.AutoModelForSeq2SeqLM.from_pretrained(folder), "en_XX", "xx_YY")


def test_marian_translation_takes_no_prefix_and_t5_takes_its_checkpoints_own(checkpoints):
    from pipeline.tasks import get_task

    marian = get_task(compose(["task=translation", f"model.name_or_path={checkpoints('marian')}", *FAST]))
    assert marian.prefix == ""
    params = {"translation_en_to_de": {"prefix": "übersetze: "}, "summarization": {"prefix": "fasse: "}}
    t5 = checkpoints("t5", task_specific_params=params)
    assert get_task(compose(["task=translation", f"model.name_or_path={t5}", *FAST])).prefix == "übersetze: "
    assert get_task(compose(["task=summarization", f"model.name_or_path={t5}", *FAST])).prefix == "fasse: "
    plain = get_task(compose(["task=summarization", f"model.name_or_path={checkpoints('t5')}", *FAST]))
    assert plain.prefix == "summarize: "  # no task_specific_params: T5's own (families.SOURCE_PREFIX)


# -- chat SFT on every decoder --------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["ctrl", "openai-gpt", "gpt2", "qwen2"])
def test_chat_sft_fine_tunes_every_decoder_by_path(checkpoints, tmp_path, model_type):
    """recipe=gpt2-instruct's chat SFT (ChatML template, response-only loss) on a checkpoint of each decoder type."""
    m = finetune(checkpoints(model_type), "generation", "lora", tmp_path, "recipe=gpt2-instruct",
                 "task.format=messages", "task.block_size=256")  # the tiny tokenizer splits chat rows finely
    assert m["family"] == model_type and m["eval_response_tokens"] > 0
    assert (tmp_path / "model" / "chat_template.jinja").is_file()


# -- the compatibility table: every method against each architecture ------------------------------------------------
def test_docs_table_of_methods_by_architecture_is_current():
    from conftest import ROOT
    from pipeline.models.methods import architecture_table

    assert architecture_table() in (ROOT / "docs" / "methods.md").read_text(), \
        "docs/methods.md architecture table is stale: paste `python -m pipeline.models.methods` into it"


@pytest.mark.parametrize("model_type", ["albert", "distilbert", "electra", "ctrl", "openai-gpt", "qwen2", "marian",
                                        "mbart"])
def test_every_allowed_peft_method_finds_its_targets_on_each_architecture(model_type):
    """Each ✓ cell of the table: the PEFT config built from peft's mapping (or all-linear) wraps real modules of a
    tiny model of the type and leaves some weights trainable."""
    import transformers

    from pipeline.families import get_family
    from pipeline.models import methods
    from pipeline.models.scratch import build_config, train_tokenizer
    from pipeline.tasks import get_task

    family = get_family(model_type)
    task_name = {"encoder": "ner", "decoder": "generation", "encoder-decoder": "summarization"}[family.arch]
    task = get_task(compose([f"task={task_name}", "debug=smoke", f"model.scratch.model_type={model_type}"]))
    config = build_config(family, train_tokenizer(family, TEXTS, 300), SIZES, task.model_kwargs() if
                          task_name != "ner" else {"num_labels": 3})
    for name in methods.METHODS:
        mcfg = methods.load_method(name)
        if mcfg.get("load_in_4bit") or methods.method_kind(mcfg) != "peft" or methods.refusal(
                name, task_name, family=model_type):
            continue
        model = getattr(transformers, task.auto_class).from_config(config)
        peft_model = methods.apply(mcfg, model, family, task, total_steps=4)
        trainable, total = methods.count_parameters(peft_model)
        assert 0 < trainable < total, (name, model_type)


def test_lora_saves_the_modules_a_base_checkpoint_lacks_so_the_reload_predicts_like_the_run(tmp_path):
    """A base DeBERTa-v2 checkpoint holds no pooler: it is initialised at load, beside the new classifier. LoRA must
    train and save it whole (modules_to_save), or the reloaded model draws another pooler and answers otherwise."""
    from pipeline.commands.predict import Predictor

    folder = save_checkpoint("deberta-v2", tmp_path / "deberta")
    run_dir = tmp_path / "run"
    finetune(folder, "classification", "lora", run_dir, "num_samples=4")
    config = json.loads((run_dir / "model" / "adapter_config.json").read_text())
    assert "pooler.dense" in config["modules_to_save"]
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    preds = Predictor(run_dir).predict([{"text": s["text"]} for s in samples], batch_size=1, progress=False)
    assert [(p["label"], round(p["score"], 4)) for p in preds] == [(s["predicted"], s["score"]) for s in samples]
