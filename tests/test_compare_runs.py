"""compare(..., runs=[a, b]): each run's adapter on the same loaded base, one column each, the model as it was."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import lora_nb
from lora_nb.demo.tiny import tiny_model

PROMPTS = ["Even or odd?\n\n42", "Tell me whether the number is even or odd.\n\n9"]
# trained tiny runs would stop at once: min_new_tokens keeps the answers long enough to differ
GEN = dict(max_new_tokens=6, min_new_tokens=6)


def train_run(base, tmp_path, name, lr, steps, parity):
    model, tok = lora_nb.load(base)
    model = lora_nb.inject(model, r=4, dropout=0.0, verbose=False)
    return lora_nb.train(model, tok, parity[0][:16], steps=steps, lr=lr, warmup=0, batch_size=4, max_length=64,
                         output_dir=str(tmp_path / name), progress=False)


@pytest.fixture(scope="module")
def two_runs(llama, parity, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    return train_run(llama, tmp, "run-a", 5e-2, 3, parity), train_run(llama, tmp, "run-b", 1e-2, 2, parity)


def own_adapter(llama):
    """A model wearing its own (not trained, visibly different) adapter, as a notebook holds one."""
    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, verbose=False)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1.0)
    return model, tok


def test_each_run_answers_as_its_own_adapter_and_the_model_is_left_as_it_was(llama, two_runs):
    run_a, run_b = two_runs
    model, tok = own_adapter(llama)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {k: p.requires_grad for k, p in model.named_parameters()}
    own_answers = lora_nb.generate(model, tok, PROMPTS, **GEN)

    result = lora_nb.compare(model, tok, PROMPTS, runs=[run_a, str(run_b.dir)], **GEN)

    assert result.headers == ["prompt", "base", "run-a", "run-b"]
    assert [r[0] for r in result.rows] == PROMPTS
    plain, _ = lora_nb.load(llama)
    assert [r[1] for r in result.rows] == lora_nb.generate(plain, tok, PROMPTS, **GEN)
    for column, run in ((2, run_a), (3, run_b)):
        alone = lora_nb.load_adapter(llama, run.adapter_dir)
        assert [r[column] for r in result.rows] == lora_nb.generate(alone, tok, PROMPTS, **GEN)
    assert [r[2] for r in result.rows] != [r[3] for r in result.rows]  # the two runs really differ

    assert model.active_adapter == "default" and list(model.peft_config) == ["default"]
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    assert {k: p.requires_grad for k, p in model.named_parameters()} == grads
    assert lora_nb.generate(model, tok, PROMPTS, **GEN) == own_answers


def test_without_runs_it_is_base_vs_the_models_adapter(llama):
    model, tok = own_adapter(llama)
    result = lora_nb.compare(model, tok, PROMPTS, **GEN)
    assert result.headers == ["prompt", "base", "adapter"]
    assert [r[2] for r in result.rows] == lora_nb.generate(model, tok, PROMPTS, **GEN)


def test_a_sweep_point_is_named_by_its_sweep_and_label(two_runs, tmp_path):
    from lora_nb.inference.run_adapters import run_adapter

    point = tmp_path / "sweep-20261206-140000" / "lr5e-2"
    shutil.copytree(two_runs[0].dir, point)
    (point.parent / "sweep.json").write_text(json.dumps({"status": "finished", "points": []}))
    assert run_adapter(point) == ("sweep-20261206-140000/lr5e-2", point / "adapter")
    assert run_adapter(point / "adapter") == ("sweep-20261206-140000/lr5e-2", point / "adapter")


def test_a_run_from_another_base_is_refused_in_one_line(llama, two_runs, parity, tmp_path):
    other = train_run(str(tiny_model("llama", seed=1)), tmp_path, "other-base", 1e-2, 1, parity)
    model, tok = own_adapter(llama)
    with pytest.raises(lora_nb.ConfigError) as e:
        lora_nb.compare(model, tok, PROMPTS, runs=[two_runs[0], other], **GEN)
    message = str(e.value)
    assert "\n" not in message and "other-base" in message and "trained on" in message
    assert str(tiny_model("llama", seed=1)) in message
    assert list(model.peft_config) == ["default"] and model.active_adapter == "default"


def test_multi_line_prompts_and_answers_stay_in_their_row(llama, two_runs):
    model, tok = own_adapter(llama)
    result = lora_nb.compare(model, tok, ["Even or odd?\n\n42"], runs=list(two_runs), **GEN)
    text = str(result).splitlines()
    assert "⏎" not in str(result)
    first = next(i for i, line in enumerate(text) if line.startswith("Even or odd?"))
    assert text[first + 2].startswith("42")  # the prompt's lines, one under the other, in the prompt column
    html = result._repr_html_()
    assert "white-space:pre-wrap" in html and "max-width" in html and "Even or odd?\n\n42</td>" in html
    long = lora_nb.inference.generation.Comparison([("word " * 60, "a", "b", "c")],
                                                   headers=["prompt", "base", "run-a", "run-b"])
    assert max(len(line) for line in str(long).splitlines()) <= 100


def test_the_panel_compares_the_runs_picked(llama, two_runs, in_tmp):
    from lora_nb.notebook.panel import Panel
    from lora_nb.notebook.session import Session

    for run in two_runs:
        shutil.copytree(run.dir, in_tmp / "runs" / run.name)
    session = Session()
    session.load(llama)
    session.inject(r=4)
    panel = Panel(session)
    panel.show_runs()
    picks = {label.split()[0]: (label, folder) for label, folder in panel.compare_runs.options}
    assert sorted(picks) == ["run-a", "run-b"]  # each named as in the Runs tab: its name, then its label
    assert picks["run-b"][0] == f"run-b {two_runs[1].label}"
    panel.prompt.value = "Even or odd?\n\n12"
    panel.compare_runs.value = (picks["run-b"][1],)
    panel.buttons["Compare"].click()
    assert "<th>run-b</th>" in panel.result.value and "<th>adapter</th>" not in panel.result.value
    panel.compare_runs.value = ()
    panel.buttons["Compare"].click()
    assert "<th>adapter</th>" in panel.result.value
