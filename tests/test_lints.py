"""The lints train() runs before the first step: each fires on the mistake it names, stays silent on
good settings, and says it once per process — printed lines, never stderr."""

from __future__ import annotations

import pytest

import lora_nb
from lora_nb.training import lints as lint_module
from lora_nb.recipe.schema import LoraSection


@pytest.fixture(autouse=True)
def fresh():
    lint_module._shown.clear()
    yield
    lint_module._shown.clear()


def text_rows(short: int, long: int) -> list[dict]:
    return [{"text": "one two"} for _ in range(short)] + [{"text": " ".join(["even odd"] * 40)} for _ in range(long)]


def test_each_mistake_is_named_once_in_stdout_not_stderr(llama, parity, tmp_path, capsys):
    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=16, alpha=4, verbose=False)  # k_proj is 32→16 here
    for attempt in range(2):
        lora_nb.train(model, tok, text_rows(4, 12), steps=1, lr=0.05, batch_size=4, max_length=16, warmup=5,
                      output_dir=str(tmp_path / "run"), overwrite=True, progress=False)
        out, err = capsys.readouterr()
        notes = [line for line in out.splitlines() if line.startswith("note: ")]
        if attempt == 0:
            assert [n.split()[1] for n in notes] == ["lora.alpha", "train.lr", "lora.r", "data.eval",
                                                     "train.max_length", "train.warmup"], out
            assert "train.warmup 5 steps is not shorter than the run (1 steps)" in out
            assert "alpha/r = 0.25, so each step moves the adapter 8x less" in out and "set alpha=32" in out
            assert "k_proj: 32→16" in out and "use r < 16" in out
            assert "cuts 12 of 16 examples (75%)" in out
        else:
            assert notes == [], "a lint is said once per process"
        assert "note:" not in err


def test_notes_are_lora_nb_warnings_a_user_can_silence(llama, tmp_path, capsys):
    import warnings

    from lora_nb.core.errors import LoraNbWarning

    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=8, alpha=2, verbose=False)
    lint_module._shown.clear()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=LoraNbWarning)
        lora_nb.train(model, tok, text_rows(8, 0), steps=1, batch_size=4, max_length=16,
                      output_dir=str(tmp_path / "quiet"), progress=False)
    out, err = capsys.readouterr()
    assert "note:" not in out and "note:" not in err
    lint_module._shown.clear()
    lora_nb.train(model, tok, text_rows(8, 0), steps=1, batch_size=4, max_length=16,
                  output_dir=str(tmp_path / "said"), progress=False)
    out, err = capsys.readouterr()
    assert "note: lora.alpha 2 is below lora.r 8" in out and "LoraNbWarning" not in err


def test_good_settings_say_nothing(llama, parity, tmp_path, capsys):
    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, alpha=8, verbose=False)
    lora_nb.train(model, tok, parity[0], steps=1, lr=2e-4, batch_size=4, max_length=64, eval=0.25,
                  output_dir=str(tmp_path / "run"), progress=False)
    assert "note:" not in capsys.readouterr().out


def test_the_thresholds():
    lora = LoraSection(r=16, alpha=32)
    assert lint_module.lints(lora=lora, lr=2e-4, has_eval=True) == []
    assert lint_module.lints(lora=LoraSection(r=64, alpha=16, variant="rslora"), lr=2e-4,
                             has_eval=True) == []  # alpha/sqrt(r) = 2
    assert "below LoRA's usual range" in lint_module.lints(lora=lora, lr=1e-6, has_eval=True)[0]
    assert lint_module.lints(lora=lora, lr=2e-3, has_eval=True) == []  # small models take up to 2e-3
    assert lint_module.lints(lora=lora, lr=2e-4, has_eval=True, adapted={"q": (64, 17)}) == []
    assert "use r < 16" in lint_module.lints(lora=lora, lr=2e-4, has_eval=True, adapted={"q": (64, 16)})[0]
    assert lint_module.lints(lora=lora, lr=2e-4, has_eval=True, max_length=64, cut=5, rows=10) == []  # half: not most
    assert "cuts 6 of 10" in lint_module.lints(lora=lora, lr=2e-4, has_eval=True, max_length=64, cut=6, rows=10)[0]


@pytest.mark.parametrize("warmup, steps, said", [(5, 1, True), (10, 10, True), (9, 10, False), (0.5, 1, False),
                                                 (0.03, 100, False), (0, 0, False)])
def test_warmup_not_shorter_than_the_run_is_a_note(warmup, steps, said):
    found = lint_module.lints(lora=LoraSection(r=8, alpha=16), lr=2e-4, has_eval=True, warmup=warmup, steps=steps)
    assert any(f.startswith("train.warmup") for f in found) is said
