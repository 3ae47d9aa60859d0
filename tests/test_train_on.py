"""data.train_on and lora_nb.data.check: which tokens carry loss, shown before training and trained as shown,
with a chat template that marks assistant tokens ({% generation %}) and with one that does not."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from transformers import AutoTokenizer

import lora_nb
from lora_nb.core.errors import ConfigError
from lora_nb.demo.tiny import CHAT_TEMPLATE

PLAIN_TEMPLATE = CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")

ROWS = [{"messages": [{"role": "system", "content": "be brief"},
                      {"role": "user", "content": f"{a}+{a}?"}, {"role": "assistant", "content": f"A{2 * a}"},
                      {"role": "user", "content": "and double?"}, {"role": "assistant", "content": f"B{4 * a}"}]}
        for a in range(11, 15)]


@pytest.fixture(scope="module")
def marked(llama):
    return AutoTokenizer.from_pretrained(llama)


@pytest.fixture(scope="module")
def plain(llama):
    tok = AutoTokenizer.from_pretrained(llama)
    tok.chat_template = PLAIN_TEMPLATE
    return tok


def trained_labels(monkeypatch, llama, tok, rows, folder, **train):
    """The tokens whose labels are not -100 in the batches SFTTrainer.compute_loss receives, per example."""
    from trl import SFTTrainer

    seen, original = [], SFTTrainer.compute_loss

    def spy(self, model, inputs, *a, **kw):
        seen.extend(zip(inputs["input_ids"].tolist(), inputs["labels"].tolist()))
        return original(self, model, inputs, *a, **kw)

    monkeypatch.setattr(SFTTrainer, "compute_loss", spy)
    model = lora_nb.inject(lora_nb.load(llama)[0], r=2, verbose=False)
    lora_nb.train(model, tok, rows, steps=1, batch_size=len(rows), group_by_length=False, output_dir=str(folder),
                  progress=False, **train)
    monkeypatch.setattr(SFTTrainer, "compute_loss", original)
    return sorted([tok.decode([i]) for i, label in zip(ids, labels) if label != -100] for ids, labels in seen)


@pytest.mark.parametrize("template", ["marked", "plain"])
@pytest.mark.parametrize("train_on", [None, "last_turn", "assistant", "all"])
def test_check_shows_the_tokens_the_loss_is_computed_on(template, train_on, request, llama, tmp_path, monkeypatch):
    tok = request.getfixturevalue(template)
    report = lora_nb.data.check(tok, ROWS, rows=len(ROWS), train_on=train_on)
    trained = trained_labels(monkeypatch, llama, tok, ROWS, tmp_path / "run", train_on=train_on)
    assert trained == sorted(report.trained_tokens(i) for i in range(len(ROWS)))

    expected = {None: "assistant" if template == "marked" else "last_turn"}.get(train_on, train_on)
    assert (report.train_on, report.marks) == (expected, template == "marked")
    for i, row in enumerate(report.rows):
        text = "".join(report.trained_tokens(i))
        first, last = (m["content"] for m in ROWS[i]["messages"] if m["role"] == "assistant")
        if expected == "all":
            assert row["trained"] == row["total"] and "be brief" in text
        else:
            assert last in text and "be brief" not in text and "double" not in text
            assert (first in text) == (expected == "assistant")
        assistant_turns = [tokens for role, tokens in row["turns"] if role == "assistant"]
        assert len(assistant_turns) == 2  # shown turn by turn
        assert any(loss for _, loss in assistant_turns[1]) and not any(
            loss for role, tokens in row["turns"] if role == "user" and expected != "all" for _, loss in tokens)


def test_report_says_what_is_trained_and_how_to_change_it(plain):
    report = lora_nb.data.check(plain, ROWS, rows=1)
    text = str(report)
    assert "train_on: last_turn (default)" in text and "set data.train_on: assistant" in text
    assert "[[B44<|end|>\n]]" in text and "A22" in text and "[[A22" not in text
    html = report._repr_html_()
    assert "<details open>" in html and html.count("background:#c8f7c5;font-weight:bold") == report.rows[0]["trained"]
    long = [{"messages": [{"role": "user", "content": "x " * 400}, {"role": "assistant", "content": "y"}]}]
    assert "<details>" in lora_nb.data.check(plain, long)._repr_html_()  # a long row starts folded


def test_completions_train_unless_all(marked):
    rows = [{"prompt": "2+2=", "completion": "4"}]
    assert lora_nb.data.check(marked, rows).trained_tokens(0) == ["4", "<|end|>"]
    every = lora_nb.data.check(marked, rows, train_on="all")
    assert every.rows[0]["trained"] == every.rows[0]["total"]
    alpaca = lora_nb.data.check(marked, [{"instruction": "2+2?", "output": "4"}], train_on="all")
    assert "2+2?" in "".join(alpaca.trained_tokens(0))


def test_text_takes_only_all(marked):
    assert lora_nb.data.check(marked, [{"text": "2+2=4"}]).train_on == "all"
    with pytest.raises(ConfigError, match=r"data.train_on: .*text rows have no turns.*Allowed: null, all"):
        lora_nb.data.check(marked, [{"text": "2+2=4"}], train_on="last_turn")


def test_a_template_that_rewrites_earlier_turns_is_refused_for_assistant(llama):
    tok = AutoTokenizer.from_pretrained(llama)
    tok.chat_template = PLAIN_TEMPLATE.replace("<|end|>", "{% if loop.last %}<|end|>{% endif %}")
    with pytest.raises(ConfigError, match=r"data.train_on: .*cannot be masked; use train_on last_turn or all"):
        lora_nb.data.check(tok, ROWS, train_on="assistant")
    assert lora_nb.data.check(tok, ROWS, train_on="last_turn").train_on == "last_turn"


def test_train_on_in_a_recipe_and_a_typo():
    recipe = lora_nb.Recipe.from_yaml("model: {name: m}\ndata: {path: d.jsonl, train_on: assistant}\n")
    assert recipe.data.train_on == "assistant"
    with pytest.raises(ConfigError, match=r"data.train_on.*Did you mean 'assistant'"):
        lora_nb.Recipe.from_yaml("model: {name: m}\ndata: {path: d.jsonl, train_on: asistant}\n")


def test_script_with_train_on_gives_the_api_losses(llama, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(llama, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = PLAIN_TEMPLATE  # every assistant turn, masked by lora_nb itself
    tok.save_pretrained(folder)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS * 2))
    recipe = lora_nb.Recipe.from_dict({
        "model": {"name": str(folder)}, "lora": {"r": 4, "alpha": 8, "targets": "attention"},
        "data": {"path": str(data), "train_on": "assistant"},
        "train": {"steps": 3, "batch_size": 4, "max_length": 64, "lr": 1e-3}, "output_dir": str(tmp_path / "run")})
    run = lora_nb.run(recipe)
    script = tmp_path / "train_lora.py"
    script.write_text(lora_nb.to_script(recipe))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    shim = ("import runpy, sys; sys.modules['lora_nb'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", shim, str(script), "--output-dir", str(tmp_path / "script")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((tmp_path / "script" / "checkpoints" / "trainer_state.json").read_text())
    assert [(h["step"], h["loss"]) for h in state["log_history"] if "loss" in h] == \
           [(h["step"], h["loss"]) for h in run.history if "loss" in h]

