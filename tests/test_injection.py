"""inject(): targets by role, name or regex, exactly; PEFT variants; errors that list choices."""

from __future__ import annotations

import pytest
import torch

import lora_nb
from lora_nb.model.discovery import discover
from lora_nb.core.errors import ConfigError

FAMILIES = ["llama", "gpt2", "phi3", "qwen3_moe", "bert"]


def wrapped(peft_model):
    prefix = "base_model.model."
    return sorted(n[len(prefix):] for n, m in peft_model.named_modules() if hasattr(m, "lora_A"))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("role", ["attention", "mlp"])
def test_role_wraps_exactly_its_modules(tiny, family, role):
    model, _ = lora_nb.load(tiny(family))
    expected = sorted(discover(model).names(role))
    if not expected:
        with pytest.raises(ConfigError, match="matches no linear module"):
            lora_nb.inject(model, targets=role, verbose=False)
        return
    peft_model = lora_nb.inject(model, r=4, targets=role, verbose=False)
    assert wrapped(peft_model) == expected


def test_names_list_and_regex(llama):
    model, _ = lora_nb.load(llama)
    by_name = lora_nb.inject(model, r=4, targets=["q_proj", "v_proj"], verbose=False)
    assert {n.rsplit(".", 1)[-1] for n in wrapped(by_name)} == {"q_proj", "v_proj"}
    by_regex = lora_nb.inject(by_name, r=4, targets=r".*layers\.0\.mlp\..*", verbose=False)
    assert wrapped(by_regex) == sorted(f"model.layers.0.mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj"))


def test_unknown_target_lists_the_choices(llama):
    model, _ = lora_nb.load(llama)
    with pytest.raises(ConfigError) as err:
        lora_nb.inject(model, targets="atention", verbose=False)
    message = str(err.value)
    assert "lora.targets" in message and "'atention'" in message
    assert "attention" in message and "mlp" in message and "q_proj" in message
    assert "Did you mean 'attention'?" in message


def test_variants_and_patterns(llama):
    model, _ = lora_nb.load(llama)
    rs = lora_nb.inject(model, r=8, alpha=16, variant="rslora", verbose=False)
    assert rs.peft_config["default"].use_rslora
    dora = lora_nb.inject(rs, r=8, variant="dora", rank_pattern={"q_proj": 2}, verbose=False)
    config = dora.peft_config["default"]
    assert config.use_dora and not config.use_rslora
    q = dora.get_submodule("base_model.model.model.layers.0.self_attn.q_proj")
    assert q.lora_A["default"].weight.shape[0] == 2 and hasattr(q, "lora_magnitude_vector")
    with pytest.raises(ConfigError, match="Did you mean 'dora'"):
        lora_nb.inject(model, variant="dorra", verbose=False)


def test_reinjecting_replaces_the_adapter(llama, capsys):
    model, _ = lora_nb.load(llama)
    first = lora_nb.inject(model, r=4, targets="attention")
    second = lora_nb.inject(first, r=4, targets="mlp")
    assert "Replacing the adapter" in capsys.readouterr().out
    assert all(".mlp." in n for n in wrapped(second))


def test_same_seed_same_initialisation(llama):
    a = lora_nb.inject(lora_nb.load(llama)[0], r=4, seed=1, verbose=False)
    b = lora_nb.inject(lora_nb.load(llama)[0], r=4, seed=1, verbose=False)
    c = lora_nb.inject(lora_nb.load(llama)[0], r=4, seed=2, verbose=False)
    wa, wb, wc = (m.get_submodule("base_model.model.model.layers.0.self_attn.q_proj").lora_A["default"].weight
                  for m in (a, b, c))
    assert (wa == wb).all() and not (wa == wc).all()


@pytest.mark.parametrize("quant", [None, "4bit"])
def test_inject_says_the_share_discover_gives(llama, capsys, quant):
    """One figure for 'how much of the model trains': inject's line repeats discover's % of model
    (PEFT's summary, which divides by base + adapter, is not printed)."""
    model, _ = lora_nb.load(llama, quant=quant)
    table = discover(model, r=4)
    lora_nb.inject(model, r=4, targets="attention")
    expected = next(row for row in table.summary_rows() if row[0] == "attention")
    out = capsys.readouterr().out
    assert out == (f"LoRA adapter: {expected[2]:,} trainable parameters, {expected[3]} of the model's "
                   f"{table.total_params:,} (attention, r=4)\n")


def lora_weights(peft_model) -> dict:
    return {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("settings, key", [
    ({"targets": "atention"}, "lora.targets"),
    ({"targets": []}, "lora.targets"),
    ({"targets": "layers\\.0\\.(q_proj"}, "lora.targets"),
    ({"rank_pattern": {"q_proj[": 8}}, "lora.rank_pattern"),
    ({"variant": "dorra"}, "lora.variant"),
    ({"r": 0}, "lora.r"),
])
def test_a_failed_inject_keeps_the_adapter(llama, settings, key):
    from peft import PeftModel

    model = lora_nb.inject(lora_nb.load(llama)[0], r=4, targets="attention", verbose=False)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()  # trained-looking weights, unlike the zero init a fresh adapter would have
    before, modules = lora_weights(model), wrapped(model)

    with pytest.raises(ConfigError) as err:
        lora_nb.inject(model, **{"r": 4, "targets": "mlp", **settings}, verbose=False)

    assert str(err.value).startswith(key)
    assert isinstance(model, PeftModel) and wrapped(model) == modules
    after = lora_weights(model)
    assert after.keys() == before.keys() and all(torch.equal(after[n], before[n]) for n in before)


def test_empty_targets_list_the_choices(llama):
    model, _ = lora_nb.load(llama)
    with pytest.raises(ConfigError) as err:
        lora_nb.inject(model, targets=[], verbose=False)
    message = str(err.value)
    assert message.startswith("lora.targets: is an empty list; name at least one module or role (got [])")
    assert "Allowed: all-linear, attention, mlp" in message


@pytest.mark.parametrize("setting", ["rank_pattern", "alpha_pattern"])
def test_invalid_regex_in_a_pattern(llama, setting):
    model, _ = lora_nb.load(llama)
    with pytest.raises(ConfigError) as err:
        lora_nb.inject(model, verbose=False, **{setting: {"q_proj[": 8}})
    assert str(err.value).startswith(f"lora.{setting}: key is not a valid regex")
    assert "'q_proj['" in str(err.value)


@pytest.fixture
def within_a_minute():
    """A hang fails the test instead of the CI job (the calls below take well under a second)."""
    import signal

    def hung(*_):
        raise TimeoutError("did not return within 60 s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# nested repeats: Python's re takes 2^len(name) steps on a name they do not match
BACKTRACKING = [r"(\w+\.?)+\d\d\d", r"((\w|\.)+)+!", r"(.*)*z_proj"]


@pytest.mark.parametrize("pattern", BACKTRACKING)
def test_a_backtracking_targets_regex_returns(llama, within_a_minute, pattern):
    model, _ = lora_nb.load(llama)
    with pytest.raises(ConfigError, match=r"^lora.targets: regex matches no linear module"):
        lora_nb.inject(model, targets=pattern, verbose=False)
    adapted = lora_nb.inject(model, targets=r"(\w+\.?)+q_proj", verbose=False)  # matches some: still exact
    assert {n.rsplit(".", 1)[-1] for n in wrapped(adapted)} == {"q_proj"}


@pytest.mark.parametrize("setting", ["rank_pattern", "alpha_pattern"])
def test_a_backtracking_pattern_key_reaches_peft_as_the_names_it_matches(llama, within_a_minute, setting):
    model, _ = lora_nb.load(llama)
    adapted = lora_nb.inject(model, r=8, verbose=False, **{setting: {r"(\w+\.?)+q_proj": 2}})
    q = adapted.get_submodule("base_model.model.model.layers.0.self_attn.q_proj")
    v = adapted.get_submodule("base_model.model.model.layers.0.self_attn.v_proj")
    if setting == "rank_pattern":
        assert q.lora_A["default"].weight.shape[0] == 2 and v.lora_A["default"].weight.shape[0] == 8
    else:
        assert q.scaling["default"] == 2 / 8 and v.scaling["default"] != 2 / 8
    keys = list(getattr(adapted.peft_config["default"], setting))
    assert keys == [r"model\.layers\.0\.self_attn\.q_proj|model\.layers\.1\.self_attn\.q_proj"]
    # the recipe keeps what the user wrote
    from lora_nb.runs.provenance import lora_section

    assert list(getattr(lora_section(adapted), setting)) == [r"(\w+\.?)+q_proj"]


def test_a_pattern_key_that_matches_nothing_is_refused(llama):
    model, _ = lora_nb.load(llama)
    with pytest.raises(ConfigError, match=r"^lora.rank_pattern.qproj: matches no module"):
        lora_nb.inject(model, rank_pattern={"qproj": 2}, verbose=False)


def test_matching_past_the_time_limit_is_refused(monkeypatch):
    from lora_nb.model import injection

    monkeypatch.setattr(injection, "MATCH_SECONDS", 0.0)
    names = [f"model.layers.{i}.self_attn.q_proj" for i in range(2000)]
    with pytest.raises(ConfigError, match=r"^lora.targets: takes over 0 s to match 2000 module names.*nested repeats"):
        injection.matching("lora.targets", r"(.{1,20}){1,20}z", names)


def test_peft_names_inject_the_same_adapter(llama):
    model, _ = lora_nb.load(llama)
    ours = lora_nb.inject(model, r=4, alpha=8, dropout=0.0, targets=["q_proj", "v_proj"], variant="rslora",
                          seed=3, verbose=False)
    ours_config, ours_weights = ours.peft_config["default"].to_dict(), dict(ours.named_parameters())
    theirs = lora_nb.inject(ours, r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                            use_rslora=True, seed=3, verbose=False)
    assert theirs.peft_config["default"].to_dict() == ours_config
    assert all(torch.equal(p, ours_weights[n]) for n, p in theirs.named_parameters() if "lora_" in n)
    assert lora_nb.inject(theirs, r=4, use_dora=True, verbose=False).peft_config["default"].use_dora
    with pytest.raises(ConfigError, match=r"^alpha: given twice, as alpha=8 and lora_alpha=16: keep one"):
        lora_nb.inject(theirs, alpha=8, lora_alpha=16, verbose=False)
