"""discover(): roles decided by where a module sits, counts that match PEFT's own."""

from __future__ import annotations

import json
import time

import pytest

import lora_nb
from lora_nb.model.discovery import discover


def peft_lora_count(model, targets="all-linear", r=16):
    """How many LoRA parameters PEFT itself adds for ``targets`` at rank ``r``."""
    from peft import LoraConfig, get_peft_model

    from lora_nb.model.discovery import task_type

    peft_model = get_peft_model(model, LoraConfig(r=r, target_modules=targets, lora_dropout=0.0,
                                                  task_type=task_type(model)))
    return sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)


def load_plain(folder):
    model, _ = lora_nb.load(folder)
    return model


@pytest.mark.parametrize("family", ["llama", "gpt2", "phi3", "bert"])
def test_all_linear_total_equals_peft_count(tiny, family):
    model = load_plain(tiny(family))
    report = discover(model, r=8)
    assert report.lora_params("all-linear") == peft_lora_count(model, r=8)


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["self_attn.q_proj", "v_proj"], "q_proj",
                                     ["attention", "down_proj"]])
def test_short_module_names_count_what_peft_adapts(tiny, targets):
    model = load_plain(tiny("llama"))
    report = discover(model, r=8)
    names = [t for t in ([targets] if isinstance(targets, str) else targets) if t not in report.roles]
    peft_targets = names + [n.rsplit(".", 1)[-1] for t in targets if t in report.roles for n in report.names(t)]

    assert report.lora_params(targets) == peft_lora_count(model, targets=sorted(set(peft_targets)), r=8) > 0


def test_a_module_name_that_matches_nothing_is_refused_not_counted_as_zero(llama):
    from lora_nb.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"targets: matches no linear module \(got 'q_prj'\).*Did you mean 'q_proj'"):
        discover(llama).lora_params(["q_prj", "v_proj"])


def test_moe_all_linear_total_equals_peft_count_on_the_same_modules(tiny):
    model = load_plain(tiny("qwen3_moe"))
    report = discover(model, r=8)
    assert report.lora_params("all-linear") == peft_lora_count(model, targets=report.names("all-linear"), r=8)


def test_gpt2_c_proj_is_split_between_attention_and_mlp(tiny):
    roles = discover(tiny("gpt2")).roles
    assert "transformer.h.0.attn.c_proj" in roles["attention"]
    assert "transformer.h.0.mlp.c_proj" in roles["mlp"]
    assert "transformer.h.0.attn.c_attn" in roles["attention"]  # fused qkv (Conv1D)
    assert {m.kind for m in discover(tiny("gpt2")).modules if m.role in ("attention", "mlp")} == {"Conv1D"}


def test_bert_dense_lands_in_three_roles(tiny):
    roles = discover(tiny("bert")).roles
    assert "bert.encoder.layer.0.attention.output.dense" in roles["attention"]
    assert "bert.encoder.layer.0.output.dense" in roles["mlp"]
    assert "bert.encoder.layer.0.intermediate.dense" in roles["mlp"]
    assert roles["pooler"] == ["bert.pooler.dense"]
    assert roles["head"] == ["classifier"]
    assert "bert.embeddings.word_embeddings" in roles["embedding"]


def test_llama_roles_and_head_apart(tiny):
    report = discover(tiny("llama"))
    attention = {n.rsplit(".", 1)[-1] for n in report.roles["attention"]}
    mlp = {n.rsplit(".", 1)[-1] for n in report.roles["mlp"]}
    assert attention == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert mlp == {"gate_proj", "up_proj", "down_proj"}
    assert report.roles["head"] == ["lm_head"]
    assert "lm_head" not in report.names("all-linear")


def test_phi3_fused_projections(tiny):
    report = discover(tiny("phi3"))
    assert {n.rsplit(".", 1)[-1] for n in report.roles["attention"]} == {"qkv_proj", "o_proj"}
    assert {n.rsplit(".", 1)[-1] for n in report.roles["mlp"]} == {"gate_up_proj", "down_proj"}
    qkv = next(m for m in report.modules if m.name.endswith("qkv_proj"))
    assert qkv.out_features == 3 * qkv.in_features


def test_moe_router_and_3d_experts_reported_apart(tiny):
    report = discover(tiny("qwen3_moe"))
    experts = [m for m in report.modules if m.role == "experts"]
    assert experts and all(m.experts == 4 for m in experts)  # experts × out × in
    assert {m.name.rsplit(".", 1)[-1] for m in experts} == {"gate_up_proj", "down_proj"}
    assert all(n.endswith("mlp.gate") for n in report.roles["router"])
    assert not set(report.roles["router"]) & set(report.names("all-linear"))
    assert "mlp" not in report.roles  # the MoE block holds no plain linear layers


def test_quantised_model_reports_bnb_layers(llama):
    model, _ = lora_nb.load(llama, quant="4bit")
    report = discover(model, r=4)
    kinds = {m.kind for m in report.modules if m.role in ("attention", "mlp")}
    assert kinds == {"Linear4bit"}
    assert report.lora_params("attention") == discover(llama, r=4).lora_params("attention")
    assert report.total_params == discover(llama).total_params  # packed 4-bit weights counted as parameters


def test_config_only_folder_is_enough(tiny, tmp_path):
    """Given a name or folder, only config.json is read: no weights are needed or allocated."""
    config = json.loads((tiny("llama") / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config))
    report = discover(str(tmp_path), r=4)
    assert report.lora_params("all-linear") == discover(tiny("llama"), r=4).lora_params("all-linear")


def test_70b_config_on_the_meta_device():
    import psutil
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                         num_key_value_heads=8, vocab_size=128256, architectures=["LlamaForCausalLM"])
    rss = psutil.Process().memory_info().rss
    start = time.perf_counter()
    report = discover(config, r=16)
    seconds = time.perf_counter() - start
    grown = psutil.Process().memory_info().rss - rss
    print(f"70B discovery: {seconds:.2f} s, +{grown / 2**20:.0f} MiB")
    assert 69e9 < report.total_params < 71e9
    assert len(report.roles["attention"]) == 320 and len(report.roles["mlp"]) == 240
    # r*(d+k) per module: q,o 8192x8192; k,v 1024x8192; gate,up 28672x8192; down 8192x28672
    assert report.lora_params("attention", r=16) == 80 * 16 * (2 * (8192 + 8192) + 2 * (8192 + 1024))
    assert grown < 1.5 * 2**30


def test_report_renders_as_html_and_text(llama):
    report = discover(llama, r=4)
    text, html = str(report), report._repr_html_()
    for role in ("attention", "mlp", "all-linear (PEFT)"):
        assert role in text and role in html
    assert "<table" in html and "model.layers.*.self_attn.q_proj" in html
    assert f"{report.lora_params('all-linear'):,}" in text


def test_tied_embeddings_are_counted_once(llama, tmp_path):
    """A tied lm_head is the embedding matrix: the config-only build counts it once, as the loaded model does."""
    import transformers as tf

    tok = tf.AutoTokenizer.from_pretrained(llama)
    config = tf.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=len(tok), tie_word_embeddings=True)
    tf.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model = load_plain(str(tmp_path))
    assert model.lm_head.weight is model.model.embed_tokens.weight

    from_config, from_model = discover(str(tmp_path), r=4), discover(model, r=4)

    unique = sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once
    assert from_config.total_params == from_model.total_params == unique
    assert unique == sum(p.numel() for n, p in model.named_parameters(remove_duplicate=False)) - len(tok) * 32
    assert from_config.summary_rows() == from_model.summary_rows()  # the same "% of model"


@pytest.mark.parametrize("family", ["llama", "gpt2", "phi3", "qwen3_moe", "bert"])
def test_config_and_loaded_model_give_the_same_report(tiny, family):
    """The meta-device build from config.json alone finds what the loaded model has: every module, its
    role, kind and shape, PEFT's all-linear set and the parameter total."""
    from_config, from_model = discover(tiny(family)), discover(load_plain(tiny(family)))
    assert from_config.modules == from_model.modules
    assert from_config.all_linear == from_model.all_linear
    assert from_config.total_params == from_model.total_params


def test_a_config_is_discovered_without_initialising_weights(tiny, monkeypatch):
    """Initialising weights on the meta device computes nothing and only costs time (most of a 70B
    model's build): the config-only build skips transformers' weight initialisation."""
    import transformers as tf

    initialised = []
    original = tf.LlamaPreTrainedModel._init_weights

    def counted(self, module):
        initialised.append(module)
        return original(self, module)

    monkeypatch.setattr(tf.LlamaPreTrainedModel, "_init_weights", counted)
    config = tf.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=64)
    tf.LlamaForCausalLM(config)  # a real build initialises every module: the count sees it
    assert len(initialised) > 10
    initialised.clear()

    report = discover(config)
    assert initialised == []
    assert len(report.roles["attention"]) == 2 * 4
    assert report.total_params == tf.LlamaForCausalLM(config).num_parameters()


@pytest.mark.parametrize("source", ["/nope", "empty-folder", "no-such-org/no-such-model"])
def test_a_model_that_cannot_be_found(source, tmp_path, capsys):
    from lora_nb.cli import main
    from lora_nb.core.errors import ConfigError

    if source == "empty-folder":
        source = str(tmp_path)
    with pytest.raises(ConfigError) as err:
        discover(source)
    message = str(err.value)
    assert message.startswith("model: is not a local folder with config.json, nor a reachable Hub model")
    assert message.endswith(f"(got {source!r}).") and "\n" not in message

    assert main(["targets", source]) == 2
    assert capsys.readouterr().err == f"lora-nb: {message}\n"


def test_an_unreadable_config_names_the_model(tmp_path):
    from lora_nb.core.errors import ConfigError

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no_such_architecture"}))
    with pytest.raises(ConfigError,
                       match=r"^model: has a config.json that transformers cannot read \(.*no_such_architecture"):
        discover(str(tmp_path))


@pytest.mark.parametrize("r", [-5, 0])
def test_rank_must_be_positive(llama, r, capsys):
    from lora_nb.cli import main
    from lora_nb.core.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        discover(llama, r=r)
    assert str(err.value) == f"r: the LoRA rank must be a positive whole number (8–64 covers most tasks) (got {r})."

    assert main(["targets", llama, "--r", str(r)]) == 2
    assert capsys.readouterr().err == f"lora-nb: {err.value}\n"
