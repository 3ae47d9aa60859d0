"""data.columns: data under its own column names trains as the same data renamed would, through the
API, a recipe and the exported script; its mistakes and the suggested mapping are one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import lora_nb
from lora_nb.core.errors import ConfigError
from lora_nb.data.prepare import prepare
from lora_nb.hf.columns import column_pairs


def chat(user, answer):
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def sharegpt(user, answer):
    return [{"from": "human", "value": user}, {"from": "gpt", "value": answer}]


# shape: (rows renamed by hand, the same rows under their own names, the mapping), from (question, answer)
SHAPES = {
    "alpaca from question/answer": (lambda q, a: {"instruction": q, "output": a},
                                    lambda q, a: {"question": q, "answer": a},
                                    {"instruction": "question", "output": "answer"}),
    "prompt/completion from q/a": (lambda q, a: {"prompt": q + " = ", "completion": a},
                                   lambda q, a: {"q": q + " = ", "a": a}, "q:prompt,a:completion"),
    "text from body": (lambda q, a: {"text": f"{q} is {a}"},
                       lambda q, a: {"body": f"{q} is {a}", "text": "unrelated"}, {"body": "text"}),
    "messages from ShareGPT": (lambda q, a: {"messages": chat(q, a)},
                               lambda q, a: {"conversations": sharegpt(q, a)}, {"messages": "conversations"}),
}


def examples(parity, n=16):
    return [(row["input"], row["output"]) for row in parity[0][:n]]


def losses(llama, rows, tmp_path, name, **kwargs):
    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, targets="attention", seed=0, verbose=False)
    run = lora_nb.train(model, tok, rows, steps=2, batch_size=4, max_length=64, lr=1e-3, progress=False,
                        output_dir=str(tmp_path / name), **kwargs)
    return [(h["step"], h["loss"]) for h in run.history if "loss" in h], \
           [(h["step"], h["eval_loss"]) for h in run.history if "eval_loss" in h]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_mapped_columns_train_as_the_renamed_data(llama, parity, tmp_path, shape):
    renamed, own, columns = SHAPES[shape]
    pairs = examples(parity)
    held = pairs[:4]  # eval rows under their own names too: mapped as the training rows are
    expected = losses(llama, [renamed(q, a) for q, a in pairs], tmp_path, "renamed",
                      eval=[renamed(q, a) for q, a in held], eval_steps=2)
    got = losses(llama, [own(q, a) for q, a in pairs], tmp_path, "mapped", columns=columns,
                 eval=[own(q, a) for q, a in held], eval_steps=2)
    assert got == expected and len(got[0]) == 2 and len(got[1]) == 1


def test_the_run_records_the_mapping_and_its_recipe_reruns(llama, parity, tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in examples(parity)))
    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, targets="attention", verbose=False)
    run = lora_nb.train(model, tok, str(data), steps=1, batch_size=4, max_length=64, progress=False,
                        columns="question:instruction,answer:output", output_dir=str(tmp_path / "run"))
    recipe = lora_nb.Recipe.from_yaml(run.dir / "recipe.yaml")
    assert recipe.data.columns == {"question": "instruction", "answer": "output"}
    assert recipe.data.format == "alpaca"


@pytest.mark.parametrize("columns, present, pairs", [
    ({"instruction": "question", "output": "answer"}, ["question", "answer"],
     {"instruction": "question", "output": "answer"}),
    ({"question": "instruction", "answer": "output"}, ["question", "answer"],
     {"instruction": "question", "output": "answer"}),
    ({"instruction": "input"}, ["input", "output"], {"instruction": "input"}),  # both lora_nb's names:
    ({"input": "instruction"}, ["input", "output"], {"instruction": "input"}),  # the data's column is the data's
    ({"text": "body"}, ["body", "text"], {"text": "body"}),
])
def test_a_mapping_reads_either_way_round(columns, present, pairs):
    assert column_pairs(columns, present) == pairs


def test_a_mapping_naming_a_missing_column_lists_the_columns_there_are():
    rows = [{"question": "2+2?", "answer": "4"}]
    with pytest.raises(ConfigError) as e:
        prepare(rows, None, columns={"instruction": "questoin", "output": "answer"})
    assert str(e.value) == ("data.columns: 'questoin' is not a column; the data has: question, answer. "
                            "Did you mean 'question'?")
    with pytest.raises(ConfigError, match="data.columns: question: answer names none of lora_nb's columns"):
        prepare(rows, None, columns={"question": "answer"})
    with pytest.raises(ConfigError, match="data.columns: must be a mapping, or pairs like"):
        prepare(rows, None, columns="question")


@pytest.mark.parametrize("rows, setting", [
    ([{"question": "2+2?", "answer": "4"}],
     "{instruction: question, output: answer} (%lora train columns=question:instruction,answer:output)"),
    ([{"input": "2+2?", "target": "4"}],
     "{prompt: input, completion: target} (%lora train columns=input:prompt,target:completion)"),
    ([{"instruction": "add", "context": "2 2", "response": "4"}],
     "{output: response, input: context} (%lora train columns=response:output,context:input)"),
    ([{"id": 1, "conversations": sharegpt("hi", "yo")}],
     "{messages: conversations} (%lora train columns=conversations:messages)"),
    ([{"body": "a story"}], "{text: body} (%lora train columns=body:text)"),
])
def test_data_of_a_known_shape_gets_the_mapping_that_reads_it(llama, rows, setting):
    tok = lora_nb.load(llama)[1]
    with pytest.raises(ConfigError) as e:
        prepare(rows, tok)
    assert str(e.value).startswith(f"data.format: cannot be read as any format; set data.columns: {setting} (got ")
    magic = setting.split("columns=")[1].rstrip(")")
    assert prepare(rows, tok, columns=magic)[0].num_rows == 1  # the suggested setting reads the data


def test_unknown_shapes_get_no_suggestion():
    with pytest.raises(ConfigError) as e:
        prepare([{"a": "x", "b": "y"}], None)
    assert str(e.value).startswith("data.format: cannot be read as any format (got ")


def test_sharegpt_roles_become_chat_roles(llama):
    tok = lora_nb.load(llama)[1]
    turns = [{"from": "system", "value": "be brief"}, {"from": "human", "value": "hi"}, {"from": "bot", "value": "yo"}]
    train, _, fmt = prepare([{"conversations": turns}], tok, columns={"messages": "conversations"})
    rows = train[0]["messages"] if "messages" in train.column_names else train[0]["prompt"] + train[0]["completion"]
    assert fmt == "messages"
    assert [(m["role"], m["content"]) for m in rows] == [("system", "be brief"), ("user", "hi"), ("assistant", "yo")]


def test_recipe_takes_the_mapping_as_yaml_and_as_pairs():
    yaml_form = lora_nb.Recipe.from_yaml("model: {name: m}\ndata: {columns: {instruction: question}}")
    pair_form = lora_nb.Recipe.from_dict({"model": {"name": "m"}, "data": {"columns": "question:instruction"}})
    assert yaml_form.data.columns == {"instruction": "question"}
    assert pair_form.data.columns == {"question": "instruction"}
    assert lora_nb.Recipe.from_yaml(pair_form.to_yaml()).data.columns == {"question": "instruction"}


def test_preview_shows_the_mapped_rows(llama):
    tok = lora_nb.load(llama)[1]
    shown = lora_nb.preview([{"q": "2+2=", "a": "4"}], tok, columns={"prompt": "q", "completion": "a"})
    assert shown.format == "prompt_completion"
    assert "".join(t for t, loss in shown.rows[0] if loss).startswith("4")


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_loss_mask_check_reads_the_mapped_rows(llama, shape):
    tok = lora_nb.load(llama)[1]
    renamed, own, columns = SHAPES[shape]
    pairs = [("2+2?", "4"), ("3+3?", "6")]
    mapped = lora_nb.data.check(tok, [own(q, a) for q, a in pairs], rows=2, columns=columns)
    by_hand = lora_nb.data.check(tok, [renamed(q, a) for q, a in pairs], rows=2)
    assert str(mapped) == str(by_hand) and mapped.rows[0]["trained"] > 0


def test_the_exported_script_maps_the_columns_as_lora_nb_does(llama, parity, tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in examples(parity, 24)))
    recipe = lora_nb.Recipe.from_dict({
        "model": {"name": llama}, "lora": {"r": 4, "alpha": 8, "targets": "attention"},
        "data": {"path": str(data), "eval": 0.25, "columns": {"instruction": "question", "output": "answer"}},
        "train": {"steps": 3, "batch_size": 4, "max_length": 64, "eval_steps": 3, "lr": 1e-3},
        "output_dir": str(tmp_path / "run")})
    run = lora_nb.run(recipe)
    script = tmp_path / "train_lora.py"
    script.write_text(lora_nb.to_script(recipe))
    assert "COLUMNS = {'instruction': 'question', 'output': 'answer'}" in script.read_text()
    shim = ("import runpy, sys; sys.modules['lora_nb'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", shim, str(script), "--output-dir", str(tmp_path / "script")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((tmp_path / "script" / "checkpoints" / "trainer_state.json").read_text())
    def logged(history):
        return [(h["step"], h.get("loss"), h.get("eval_loss")) for h in history if "loss" in h or "eval_loss" in h]

    assert logged(state["log_history"]) == logged(run.history) and len(logged(run.history)) == 4
