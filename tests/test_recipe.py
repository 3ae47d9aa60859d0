"""The Recipe: YAML in and out, validation with helpful messages, and one source of truth for defaults."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import yaml

import lora_nb
from lora_nb.core.errors import ConfigError
from lora_nb.recipe.schema import (
    SECTIONS,
    VARIANTS,
    DataSection,
    LoraSection,
    ModelSection,
    Recipe,
    TrainSection,
    build_section,
    lora_kwargs,
    parse_yaml,
    train_kwargs,
)

RECIPE = """
model: {name: ./tiny-llama, quant: 4bit}
lora: {r: 8, alpha: 16, targets: attention, variant: rslora}
data: {path: train.jsonl, eval: 0.1}
train: {steps: 100, lr: 1e-4, batch_size: 2, sft: {weight_decay: 0.01}}
output_dir: runs/first
"""


def default(cls: type, name: str):
    """The declared default of setting ``name`` of section ``cls``."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def recipe_error(text: str) -> str:
    """The message of the ConfigError that ``text`` (YAML below a valid model section) raises."""
    with pytest.raises(ConfigError) as info:
        Recipe.from_yaml("model: {name: ./tiny-llama}\n" + text)
    return str(info.value)


# --- reading and writing ---------------------------------------------------------------------------


def test_from_yaml_reads_every_section_and_keeps_the_other_defaults():
    r = Recipe.from_yaml(RECIPE)

    assert (r.model.name, r.model.quant) == ("./tiny-llama", "4bit")
    assert (r.lora.r, r.lora.alpha, r.lora.targets, r.lora.variant) == (8, 16.0, "attention", "rslora")
    assert (r.data.path, r.data.eval) == ("train.jsonl", 0.1)
    assert (r.train.steps, r.train.lr, r.train.batch_size) == (100, 1e-4, 2)
    assert r.train.sft == {"weight_decay": 0.01}
    assert r.output_dir == "runs/first"
    # what the YAML leaves out keeps the declared default
    assert r.model.dtype == default(ModelSection, "dtype")
    assert r.lora.dropout == default(LoraSection, "dropout")
    assert r.data.split == default(DataSection, "split")
    assert r.train.scheduler == default(TrainSection, "scheduler")


def test_yaml_text_round_trip():
    r = Recipe.from_yaml(RECIPE)
    text = r.to_yaml()

    again = Recipe.from_yaml(text)

    assert again == r
    assert yaml.safe_load(text) == r.to_dict()
    assert list(yaml.safe_load(text)) == ["model", "lora", "data", "train", "output_dir"]


def test_yaml_file_round_trip(tmp_path):
    r = Recipe.from_yaml(RECIPE)
    path = tmp_path / "recipe.yaml"

    text = r.to_yaml(path)

    assert path.read_text() == text
    assert Recipe.from_yaml(path) == r
    assert Recipe.from_yaml(str(path)) == r  # a path given as a string works too


def test_to_yaml_never_overwrites_a_file_unless_told(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("mine\n")
    r = Recipe.from_yaml(RECIPE)

    with pytest.raises(ConfigError, match=r"^path: .*overwrite=True"):
        r.to_yaml(path)
    assert path.read_text() == "mine\n"
    r.to_yaml(path, overwrite=True)
    assert Recipe.from_yaml(path) == r


def test_missing_recipe_file_is_reported_as_missing(tmp_path):
    missing = tmp_path / "recipe.yaml"

    with pytest.raises(ConfigError) as info:
        Recipe.from_yaml(str(missing))

    assert "recipe.yaml" in str(info.value)


def test_from_dict_fills_defaults_and_accepts_empty_sections():
    r = Recipe.from_dict({"model": {"name": "gpt2"}, "lora": {"r": 4}, "train": None})

    assert r.lora.r == 4
    assert r.lora.alpha == default(LoraSection, "alpha")
    assert r.train == TrainSection()
    assert r.data == DataSection()
    assert r.output_dir is None
    assert Recipe.from_dict(r.to_dict()) == r


def test_model_section_is_required():
    with pytest.raises(ConfigError, match="model"):
        Recipe.from_dict({"lora": {"r": 8}})
    with pytest.raises(ConfigError, match="model.name"):
        Recipe.from_dict({"model": {"quant": "4bit"}})


def test_yaml_float_in_exponent_form_becomes_a_float():
    # YAML 1.1 (PyYAML) reads 2e-4 — no dot — as a string; the recipe converts it.
    assert yaml.safe_load("lr: 2e-4")["lr"] == "2e-4"

    r = Recipe.from_yaml("model: {name: m}\ntrain: {lr: 2e-4}")

    assert r.train.lr == 0.0002
    assert type(r.train.lr) is float


def test_integer_given_for_a_float_setting_becomes_a_float():
    r = Recipe.from_yaml("model: {name: m}\nlora: {alpha: 16}")

    assert r.lora.alpha == 16.0
    assert type(r.lora.alpha) is float


# --- errors name the key and suggest the fix --------------------------------------------------------


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)
    with pytest.raises(ValueError):
        Recipe.from_yaml("model: {name: m}\nlora: {r: 0}")


@pytest.mark.parametrize(
    "text, key, suggestion",
    [
        ("lora: {rank: 8}", "lora.rank", "r"),
        ("lora: {alpah: 16}", "lora.alpah", "alpha"),
        ("train: {stpes: 10}", "train.stpes", "steps"),
        ("data: {paht: train.jsonl}", "data.paht", "path"),
        ("trian: {steps: 10}", "trian", "train"),
        ("moddel: {name: m}", "moddel", "model"),
    ],
)
def test_unknown_key_names_it_and_suggests_the_nearest(text, key, suggestion):
    message = recipe_error(text)

    assert message.startswith(f"{key}: unknown")
    assert f"Did you mean {suggestion!r}?" in message


def test_unknown_key_lists_the_allowed_keys():
    message = recipe_error("lora: {rank: 8}")

    for f in dataclasses.fields(LoraSection):
        assert f.name in message


def test_bad_choice_names_allowed_values_and_suggests_the_nearest():
    with pytest.raises(ConfigError) as info:
        Recipe.from_yaml("model: {name: m}\nlora: {variant: dorra}")

    message = str(info.value)
    assert "lora.variant" in message and "'dorra'" in message
    assert info.value.allowed == list(VARIANTS)
    for variant in VARIANTS:
        assert variant in message
    assert "Did you mean 'dora'?" in message


@pytest.mark.parametrize(
    "text, key, suggestion",
    [
        ("model: {name: m, quant: 4-bit}", "model.quant", "4bit"),
        ("train: {scheduler: cosin}", "train.scheduler", "cosine"),
        ("data: {format: alpacca}", "data.format", "alpaca"),
    ],
)
def test_other_choices_suggest_the_nearest(text, key, suggestion):
    with pytest.raises(ConfigError) as info:
        Recipe.from_yaml(text if text.startswith("model") else "model: {name: m}\n" + text)

    assert str(info.value).startswith(key)
    assert f"Did you mean {suggestion!r}?" in str(info.value)


@pytest.mark.parametrize(
    "text, key",
    [
        ('train: {steps: "ten"}', "train.steps"),
        ("lora: {r: eight}", "lora.r"),
        ("lora: {r: true}", "lora.r"),  # a bool is not an int here
        ("lora: {r: 8.5}", "lora.r"),
        ("lora: {targets: 5}", "lora.targets"),
        ("train: {packing: maybe}", "train.packing"),
        ("train: {lr: fast}", "train.lr"),
        ("train: {sft: [weight_decay]}", "train.sft"),
        ("lora: [r, 8]", "lora"),
    ],
)
def test_wrong_type_names_the_key(text, key):
    message = recipe_error(text)

    assert message.startswith(f"{key}: must be")


@pytest.mark.parametrize(
    "text, key",
    [
        ("lora: {r: 0}", "lora.r"),
        ("lora: {r: -4}", "lora.r"),
        ("lora: {alpha: 0}", "lora.alpha"),
        ("lora: {dropout: 1.5}", "lora.dropout"),
        ("lora: {dropout: -0.1}", "lora.dropout"),
        ("train: {steps: 0}", "train.steps"),
        ("train: {lr: 0}", "train.lr"),
        ("train: {batch_size: 0}", "train.batch_size"),
        ("train: {max_length: 0}", "train.max_length"),
        ("data: {eval: 1.5}", "data.eval"),
        ("train: {epochs: 0}", "train.epochs"),
        ("train: {epochs: -1}", "train.epochs"),
        ("train: {eval_steps: 0}", "train.eval_steps"),
        ("train: {warmup: -1}", "train.warmup"),
        ("lora: {rank_pattern: {q_proj: 0}}", "lora.rank_pattern.q_proj"),
        ("lora: {rank_pattern: {q_proj: 2.5}}", "lora.rank_pattern.q_proj"),
        ("lora: {rank_pattern: {q_proj: true}}", "lora.rank_pattern.q_proj"),
        ("lora: {alpha_pattern: {q_proj: 0}}", "lora.alpha_pattern.q_proj"),
        ("lora: {alpha_pattern: {q_proj: big}}", "lora.alpha_pattern.q_proj"),
    ],
)
def test_out_of_range_value_names_the_key(text, key):
    message = recipe_error(text)

    assert message.startswith(f"{key}:")
    assert "(got " in message


def test_settings_at_their_limits_are_accepted():
    r = Recipe.from_yaml("model: {name: m}\n"
                         "lora: {rank_pattern: {'.*q_proj': 4}, alpha_pattern: {'k_proj|v_proj': 0.5}}\n"
                         "train: {epochs: 0.5, eval_steps: 1, warmup: 0}")

    assert (r.train.epochs, r.train.eval_steps, r.train.warmup) == (0.5, 1, 0.0)
    assert r.lora.rank_pattern == {".*q_proj": 4} and r.lora.alpha_pattern == {"k_proj|v_proj": 0.5}


@pytest.mark.parametrize(
    "text, key",
    [
        ("train: {lr: .inf}", "train.lr"),
        ("train: {lr: '-inf'}", "train.lr"),  # a string that float() reads as infinity
        ("lora: {alpha: .nan}", "lora.alpha"),
        ("lora: {dropout: .nan}", "lora.dropout"),
        ("train: {warmup: .inf}", "train.warmup"),
        ("train: {epochs: .inf}", "train.epochs"),
        ("data: {eval: .nan}", "data.eval"),
        ("lora: {alpha_pattern: {q_proj: .inf}}", "lora.alpha_pattern.q_proj"),
        ("train: {sft: {max_grad_norm: .inf}}", "train.sft.max_grad_norm"),
    ],
)
def test_non_finite_number_is_refused(text, key):
    message = recipe_error(text)

    assert message.startswith(f"{key}: must be a finite number (got ")


def test_non_finite_number_from_the_api_is_refused():
    with pytest.raises(ConfigError) as info:
        build_section(TrainSection, {"lr": float("inf")}, "train")
    assert str(info.value) == "train.lr: must be a finite number (got inf)."
    with pytest.raises(ConfigError, match=r"^lora\.alpha: must be a finite number"):
        LoraSection(alpha=float("nan"))


@pytest.mark.parametrize(
    "text, key",
    [
        ("train: {sft: {report_date: 2024-01-01}}", "train.sft.report_date"),
        ("train: {sft: {lr_scheduler_kwargs: {power: .nan}}}", "train.sft.lr_scheduler_kwargs.power"),
        ("train: {sft: {report_to: [none, 2024-01-01]}}", "train.sft.report_to[1]"),
        ("train: {sft: {1: 2}}", "train.sft"),
        ("lora: {targets: [q_proj, 2024-01-01]}", "lora.targets[1]"),
        ("lora: {rank_pattern: {q_proj: 2024-01-01}}", "lora.rank_pattern.q_proj"),
        ("lora: {modules_to_save: [lm_head, .inf]}", "lora.modules_to_save[1]"),
        ("data: {eval: 2024-01-01}", "data.eval"),
    ],
)
def test_value_that_is_not_plain_data_is_refused_with_its_full_key(text, key):
    message = recipe_error(text)

    assert message.startswith(f"{key}: ")
    assert "(got " in message


def test_value_that_is_not_plain_data_from_the_api_is_refused():
    import datetime

    with pytest.raises(ConfigError, match=r"^train\.sft\.report_date: must be text, a number"):
        TrainSection(sft={"report_date": datetime.date(2024, 1, 1)})


@pytest.mark.parametrize("key", ["rank_pattern", "alpha_pattern"])
def test_pattern_key_that_is_not_a_regex_is_refused(key):
    message = recipe_error(f"lora: {{{key}: {{'q_proj(': 8}}}}")

    assert message.startswith(f"lora.{key}: key is not a valid regex")
    assert "(got 'q_proj(')" in message


def test_yaml_aliases_are_refused_before_anything_expands():
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for name, prev in zip("bcdefghi", "abcdefgh"):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    laughs = "\n".join(lines)  # 9**9 strings once written out

    for text in (laughs, "model: &m {name: m}", "model: {name: m}\nlora: {r: 8}\ntrain: {seed: *r}"):
        with pytest.raises(ConfigError, match="uses YAML anchors/aliases") as info:
            Recipe.from_yaml(text)
        assert str(info.value).startswith("recipe: ")


def test_parse_yaml_returns_plain_data_and_names_what_it_read():
    assert parse_yaml("model: {name: m}\ntrain: {steps: 5}", "cell") == {"model": {"name": "m"}, "train": {"steps": 5}}
    with pytest.raises(ConfigError, match="^cell: is not valid YAML"):
        parse_yaml("model: {name: m", "cell")
    with pytest.raises(ConfigError, match="^cell: uses YAML anchors"):
        parse_yaml("a: &x 1\nb: *x", "cell")


def test_python_tags_are_rejected_not_executed(in_tmp):
    marker = in_tmp / "pwned"
    for text in (f'!!python/object/apply:os.system ["touch {marker}"]',
                 f'model: {{name: !!python/object/apply:os.system ["touch {marker}"]}}'):
        with pytest.raises(ConfigError, match="not valid YAML"):
            Recipe.from_yaml(text)
    assert not marker.exists()


def test_invalid_yaml_is_a_config_error():
    with pytest.raises(ConfigError, match="not valid YAML"):
        Recipe.from_yaml("model: {name: m\nlora: {r: 8}")


# --- one source of truth ---------------------------------------------------------------------------


def test_reference_lists_every_setting_with_its_help():
    ref = Recipe.reference()
    lines = ref.splitlines()

    expected = [(f"{name}.", f) for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
    expected += [("", f) for f in dataclasses.fields(Recipe) if f.name not in SECTIONS]  # output_dir
    assert len(lines) == 2 + len(expected)
    for prefix, f in expected:
        line = next(line for line in lines if line.startswith(f"| `{prefix}{f.name}` |"))
        assert f.metadata["help"] in line
        for choice in f.metadata["choices"] or ():
            assert choice in line
    assert "| null, 8bit, 4bit |" in ref and "| null, text, alpaca, messages, prompt_completion |" in ref


def test_sections_are_the_recipe_fields():
    assert {f.name for f in dataclasses.fields(Recipe)} == set(SECTIONS) | {"output_dir"}


def _parameters(fn) -> dict:
    return inspect.signature(fn).parameters


@pytest.mark.parametrize(
    "fn, section, positional",
    [
        (lambda: lora_nb.train, TrainSection, {"sft": "**"}),
        (lambda: lora_nb.train, DataSection, {"path": "data"}),
        (lambda: lora_nb.inject, LoraSection, {}),
        (lambda: lora_nb.load, ModelSection, {"name": "model"}),
    ],
    ids=["train-train", "train-data", "inject-lora", "load-model"],
)
def test_api_defaults_are_the_section_defaults(fn, section, positional):
    params = _parameters(fn())

    for f in dataclasses.fields(section):
        if f.name in positional:
            continue
        assert f.name in params, f"{fn().__name__} has no keyword for {f.name}"
        assert params[f.name].default == default(section, f.name), f"{fn().__name__}({f.name}=...)"


def test_an_adapter_without_its_own_seed_takes_the_train_seed():
    from lora_nb.recipe.schema import adapter_seed

    assert _parameters(lora_nb.inject)["seed"].default is None  # inject resolves None the same way
    assert adapter_seed(LoraSection(), TrainSection()) == default(TrainSection, "seed")
    assert adapter_seed(LoraSection(seed=3), TrainSection(seed=7)) == 3


def test_recipe_keywords_for_inject_are_its_parameters():
    params = _parameters(lora_nb.inject)

    for key in lora_kwargs(Recipe.from_yaml(RECIPE).lora):
        assert params[key].kind is inspect.Parameter.KEYWORD_ONLY


def test_recipe_keywords_for_train_are_its_parameters():
    recipe = Recipe.from_yaml(RECIPE)
    params = _parameters(lora_nb.train)
    kwargs = train_kwargs(recipe)

    extra = {key: value for key, value in kwargs.items() if key not in params}
    assert extra == recipe.train.sft  # SFTConfig extras travel as train()'s **sft_overrides
    for key in kwargs.keys() - extra.keys():
        assert params[key].kind is inspect.Parameter.KEYWORD_ONLY, key


def test_a_path_object_is_taken_for_a_path_setting(tmp_path):
    recipe = Recipe.from_dict({"model": {"name": tmp_path / "m"}, "data": {"path": tmp_path / "train.jsonl"}})
    assert recipe.model.name == str(tmp_path / "m") and recipe.data.path == str(tmp_path / "train.jsonl")
    assert Recipe.from_yaml(recipe.to_yaml()) == recipe  # plain text in the YAML


# --- the names users know from transformers, PEFT and TRL (lora_nb.recipe.names) -------------------

# each library name, a value for it, and the lora_nb setting and value it must give
KNOWN_NAMES = [
    ("model", "model_name_or_path", "./m", "name", "./m"),
    ("model", "pretrained_model_name_or_path", "./m", "name", "./m"),
    ("model", "load_in_4bit", True, "quant", "4bit"),
    ("model", "load_in_8bit", True, "quant", "8bit"),
    ("model", "torch_dtype", "bfloat16", "dtype", "bf16"),
    ("model", "dtype", "float32", "dtype", "fp32"),
    ("lora", "lora_alpha", 64, "alpha", 64.0),
    ("lora", "lora_dropout", 0.1, "dropout", 0.1),
    ("lora", "target_modules", ["q_proj", "v_proj"], "targets", ["q_proj", "v_proj"]),
    ("lora", "use_dora", True, "variant", "dora"),
    ("lora", "use_rslora", True, "variant", "rslora"),
    ("data", "dataset_name", "other.jsonl", "path", "other.jsonl"),
    ("data", "dataset_train_split", "dev", "split", "dev"),
    ("data", "train_on_prompt", True, "train_on", "all"),
    ("data", "mask_history", True, "train_on", "last_turn"),
    ("data", "train_on_responses_only", True, "train_on", "assistant"),
    ("train", "max_steps", 10, "steps", 10),
    ("train", "num_train_epochs", 2, "epochs", 2.0),
    ("train", "learning_rate", 1e-4, "lr", 1e-4),
    ("train", "per_device_train_batch_size", 2, "batch_size", 2),
    ("train", "gradient_accumulation_steps", 8, "grad_accum", 8),
    ("train", "max_seq_length", 256, "max_length", 256),
    ("train", "lr_scheduler_type", "linear", "scheduler", "linear"),
    ("train", "warmup_ratio", 0.1, "warmup", 0.1),
    ("train", "warmup_steps", 5, "warmup", 5.0),
    ("train", "resume_from_checkpoint", "runs/a", "resume", "runs/a"),
    ("train", "activation_checkpointing", True, "gradient_checkpointing", True),
    ("train", "early_stopping_patience", 4, "early_stopping", {"patience": 4, "metric": "eval_loss", "min_delta": 0.0}),
]


def _with(section: str, settings: dict) -> dict:
    """A recipe dict with ``settings`` in ``section`` (a library name for the model or data path replaces ours)."""
    raw = {"model": {"name": "./base"}, "data": {"path": "train.jsonl"}}
    if settings.keys() & {"model_name_or_path", "pretrained_model_name_or_path", "dataset_name"}:
        raw[section].pop("name" if section == "model" else "path")
    raw[section] = {**raw.get(section, {}), **settings}
    return raw


@pytest.mark.parametrize("section, name, value, key, expected", KNOWN_NAMES, ids=[row[1] for row in KNOWN_NAMES])
def test_a_library_name_is_read_as_the_lora_nb_setting(section, name, value, key, expected):
    by_library = Recipe.from_dict(_with(section, {name: value}))
    by_lora_nb = Recipe.from_dict(_with(section, {key: expected}))
    assert getattr(getattr(by_library, section), key) == expected
    assert by_library == by_lora_nb
    assert Recipe.from_yaml(yaml.safe_dump(_with(section, {name: value}))) == by_lora_nb  # YAML too


def test_every_library_name_is_tested_and_in_the_help():
    from lora_nb.recipe.names import KNOWN

    aliases = {k.name for k in KNOWN if k.name != k.key or k.convert}
    assert aliases == {row[1] for row in KNOWN_NAMES}
    reference = Recipe.reference()
    for k in KNOWN:
        if k.name != k.key:
            assert f"Also: {k.name} (" in reference or f"; {k.name} (" in reference, k.name


@pytest.mark.parametrize("section, typo, message", [
    ("train", "max_step", r"train.max_step: unknown key.*Did you mean 'steps' \(max_steps in transformers\)\?"),
    ("train", "learning_rte", r"train.learning_rte: unknown key.*Did you mean 'lr' \(learning_rate in transformers"),
    ("model", "load_in_4bits", r"model.load_in_4bits: unknown key.*Did you mean 'quant' \(load_in_4bit in bitsand"),
    ("lora", "learning_rate", r"lora.learning_rate: unknown key.*Did you mean 'train.lr' .*in the train section"),
])
def test_a_name_close_to_a_library_name_suggests_the_lora_nb_key(section, typo, message):
    with pytest.raises(ConfigError, match=message) as error:
        Recipe.from_dict(_with(section, {typo: 1}))
    assert "\n" not in str(error.value)


def test_a_setting_in_the_wrong_place_names_its_section():
    with pytest.raises(ConfigError, match=r"^learning_rate: unknown section.*Did you mean 'train.lr'"):
        Recipe.from_dict({"model": {"name": "m"}, "learning_rate": 1e-4})
    with pytest.raises(ConfigError, match=r"^train.output_dir: unknown key.*'output_dir' \(at the top level\)"):
        Recipe.from_dict({"model": {"name": "m"}, "train": {"output_dir": "x"}})


@pytest.mark.parametrize("section, settings, message", [
    ("train", {"lr": 2e-4, "learning_rate": 1e-3},
     r"^train.lr: given twice, as lr=0.0002 and learning_rate=0.001: keep one\.$"),
    ("lora", {"use_dora": True, "use_rslora": True},
     r"^lora.variant: given twice, as use_dora=True and use_rslora=True"),
    ("model", {"quant": "8bit", "load_in_4bit": True},
     r"^model.quant: given twice, as quant='8bit' and load_in_4bit=True"),
    ("train", {"warmup_ratio": 0.1, "warmup_steps": 10}, r"^train.warmup: given twice"),
])
def test_a_setting_and_its_library_name_that_disagree_are_one_error(section, settings, message):
    with pytest.raises(ConfigError, match=message):
        Recipe.from_dict(_with(section, settings))


def test_values_a_library_name_converts():
    agree = Recipe.from_dict(_with("train", {"lr": 1e-4, "learning_rate": 1e-4}))  # the same value: no conflict
    assert agree.train.lr == 1e-4
    assert Recipe.from_dict(_with("train", {"max_steps": -1})).train.steps is None  # transformers' "not set"
    assert Recipe.from_dict(_with("lora", {"use_dora": False})).lora.variant == "lora"  # false sets nothing
    assert Recipe.from_dict(_with("model", {"load_in_4bit": False, "load_in_8bit": True})).model.quant == "8bit"
    with pytest.raises(ConfigError, match=r"train.warmup_ratio: must be a fraction of the steps in \[0, 1\)"):
        Recipe.from_dict(_with("train", {"warmup_ratio": 1.5}))
    with pytest.raises(ConfigError, match=r"lora.use_dora: must be True or False"):
        Recipe.from_dict(_with("lora", {"use_dora": "yes"}))


def test_train_sft_refuses_what_lora_nb_sets_from_the_same_table():
    from lora_nb.recipe.names import KNOWN
    from lora_nb.training.sft_settings import check_sft_overrides

    for k in KNOWN:
        if k.section in ("train", ""):
            refusal = rf"^train.sft.{k.name}: is set by lora_nb from '{k.key}'; set {k.key}= "
            with pytest.raises(ConfigError, match=refusal):
                check_sft_overrides({k.name: 1})
    with pytest.raises(ConfigError, match=r"train.sft.max_step: is not an SFTConfig setting.*Did you mean 'train"):
        check_sft_overrides({"max_step": 1})
