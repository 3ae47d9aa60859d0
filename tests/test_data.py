"""Training data: read from lists and files, detect the format, mask the loss to the response, train.

Rows come from the demo's parity task (``parity`` fixture), rewritten into each format; the
tokenizer and model are the tiny llama built locally, trained for real with TRL's SFTTrainer.
"""

from __future__ import annotations

import csv
import json
import math

import pandas as pd
import pytest
import trl
from datasets import Dataset, DatasetDict
from transformers import AutoTokenizer

import lora_nb
from lora_nb.data.prepare import prepare, read
from lora_nb.core.errors import ConfigError
from lora_nb.recipe.schema import Recipe

END = "<|end|>"  # the tiny tokenizer's eos, closing every turn
FORMATS = ["text", "alpaca", "alpaca_no_input", "messages", "prompt_completion"]


def as_format(rows: list[dict], fmt: str) -> list[dict]:
    """The parity task's alpaca rows rewritten in ``fmt``."""
    if fmt == "alpaca":
        return [dict(r) for r in rows]
    if fmt == "alpaca_no_input":
        return [{"instruction": f"{r['instruction']} {r['input']}", "output": r["output"]} for r in rows]
    if fmt == "text":
        return [{"text": f"{r['instruction']} {r['input']}\n{r['output']}"} for r in rows]
    if fmt == "messages":
        return [{"messages": [{"role": "user", "content": f"{r['instruction']} {r['input']}"},
                              {"role": "assistant", "content": r["output"]}]} for r in rows]
    if fmt == "prompt_completion":
        return [{"prompt": f"{r['instruction']} {r['input']}\n", "completion": r["output"]} for r in rows]
    raise ValueError(fmt)


def detected(fmt: str) -> str:
    return "alpaca" if fmt == "alpaca_no_input" else fmt


@pytest.fixture(scope="module")
def rows(parity):
    return parity[0][:16]


@pytest.fixture(scope="module")
def tok(llama):
    return AutoTokenizer.from_pretrained(llama)


@pytest.fixture(scope="module")
def peft_model(llama):
    model, _ = lora_nb.load(llama)
    return lora_nb.inject(model, r=4, verbose=False)


def trained_text(tokenizer, example: dict) -> str:
    """The tokens of a processed example that the loss falls on, decoded."""
    ids = example["input_ids"]
    if "labels" in example:
        mask = [label != -100 for label in example["labels"]]
    else:
        masks = [example[k] for k in ("completion_mask", "assistant_masks") if k in example]
        assert masks, f"no loss mask in the processed example: {sorted(example)}"
        mask = [all(m[i] for m in masks) for i in range(len(ids))]
    return tokenizer.decode([i for i, keep in zip(ids, mask) if keep])


def sft_example(model, tokenizer, dataset, tmp_path) -> dict:
    """The first example as TRL's SFTTrainer tokenises it for training."""
    config = trl.SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=1, report_to="none", bf16=False, max_length=64,
                           assistant_only_loss="messages" in dataset.column_names)
    trainer = trl.SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    return trainer.train_dataset[0]


# --- formats ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_prepare_detects_the_format(fmt, rows, tok):
    data = as_format(rows, fmt)

    train, eval_rows, found = prepare(data, tok)

    assert found == detected(fmt)
    assert eval_rows is None
    assert len(train) == len(data)
    expected_columns = {"text": ["text"], "messages": ["messages"]}.get(found, ["prompt", "completion"])
    assert sorted(train.column_names) == sorted(expected_columns)


@pytest.mark.parametrize("fmt", ["alpaca", "alpaca_no_input"])
def test_alpaca_becomes_chat_turns_with_a_chat_template(fmt, rows, tok):
    row = as_format(rows, fmt)[0]

    train, _, _ = prepare([row], tok)

    user = f"{row['instruction']}\n\n{row['input']}" if "input" in row else row["instruction"]
    assert train[0]["prompt"] == [{"role": "user", "content": user}]
    assert train[0]["completion"] == [{"role": "assistant", "content": row["output"]}]


def test_alpaca_uses_the_alpaca_prompt_without_a_chat_template(rows, llama):
    tok = AutoTokenizer.from_pretrained(llama)
    tok.chat_template = None
    with_input, without_input = rows[0], as_format(rows, "alpaca_no_input")[1]

    train, _, fmt = prepare([with_input, without_input], tok)

    assert fmt == "alpaca"
    assert train[0]["prompt"] == (f"### Instruction:\n{with_input['instruction']}\n\n"
                                  f"### Input:\n{with_input['input']}\n\n### Response:\n")
    assert train[1]["prompt"] == f"### Instruction:\n{without_input['instruction']}\n\n### Response:\n"
    assert [r["completion"] for r in train] == [with_input["output"], without_input["output"]]


def test_format_can_be_named(rows, tok):
    data = as_format(rows, "prompt_completion")
    for r in data:
        r["text"] = "an extra column the format ignores"

    train, _, fmt = prepare(data, tok, format="prompt_completion")

    assert fmt == "prompt_completion"
    assert sorted(train.column_names) == ["completion", "prompt"]


# --- the loss falls on the response only -----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["alpaca", "alpaca_no_input", "messages", "prompt_completion"])
def test_loss_falls_on_the_response_only(fmt, rows, tok, peft_model, tmp_path):
    row = as_format(rows, fmt)[0]
    train, _, _ = prepare([row] * 2, tok)

    example = sft_example(peft_model, tok, train, tmp_path)

    response = rows[0]["output"]
    assert trained_text(tok, example) == response + END
    whole = tok.decode(example["input_ids"])
    assert rows[0]["instruction"].split()[0] in whole  # the prompt is there, just not trained on


def test_text_trains_on_every_token(rows, tok, peft_model, tmp_path):
    train, _, _ = prepare(as_format(rows, "text")[:2], tok)

    example = sft_example(peft_model, tok, train, tmp_path)

    assert trained_text(tok, example) == train[0]["text"] + END


def test_alpaca_without_chat_template_masks_the_alpaca_prompt(rows, llama, peft_model, tmp_path):
    tok = AutoTokenizer.from_pretrained(llama)
    tok.chat_template = None
    train, _, _ = prepare(rows[:2], tok)

    example = sft_example(peft_model, tok, train, tmp_path)

    assert trained_text(tok, example) == rows[0]["output"] + END
    assert "### Response:" in tok.decode(example["input_ids"])


def test_every_assistant_turn_of_a_conversation_is_trained(tok, peft_model, tmp_path):
    chat = [{"role": "user", "content": "Even or odd? 12"}, {"role": "assistant", "content": "even"},
            {"role": "user", "content": "And 7?"}, {"role": "assistant", "content": "odd"}]
    train, _, _ = prepare([{"messages": chat}] * 2, tok)

    example = sft_example(peft_model, tok, train, tmp_path)

    assert trained_text(tok, example) == f"even{END}odd{END}"


def test_template_without_generation_markers_trains_the_last_answer(llama, peft_model, tmp_path):
    tok = AutoTokenizer.from_pretrained(llama)
    tok.chat_template = tok.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    chat = [{"role": "user", "content": "Even or odd? 12"}, {"role": "assistant", "content": "even"},
            {"role": "user", "content": "And 7?"}, {"role": "assistant", "content": "odd"}]

    train, _, fmt = prepare([{"messages": chat}] * 2, tok)

    assert fmt == "messages"
    assert train[0]["prompt"] == chat[:3] and train[0]["completion"] == chat[3:]
    example = sft_example(peft_model, tok, train, tmp_path)
    # the completion is the last turn as this template renders it, newline included
    assert trained_text(tok, example) == f"odd{END}\n"


# --- real training on each format ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_train_two_steps_on_each_format(fmt, rows, llama, tmp_path):
    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, verbose=False)
    data = as_format(rows, fmt)

    run = lora_nb.train(model, tok, data, steps=2, batch_size=4, max_length=64, warmup=0,
                        output_dir=str(tmp_path / "run"), progress=False)

    assert (run.status, run.step) == ("finished", 2)
    losses = [h["loss"] for h in run.history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) and x > 0 for x in losses)
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)  # B starts at zero
    assert (run.adapter_dir / "adapter_model.safetensors").exists()
    recipe = Recipe.from_yaml(run.dir / "recipe.yaml")
    assert recipe.data.format == detected(fmt)
    # rows given in memory are kept with the run, so its recipe can be run again
    assert read(recipe.data.path).to_list() == data


# --- files -----------------------------------------------------------------------------------------


def write(rows: list[dict], path) -> None:
    ext = path.suffix
    if ext == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif ext == ".json":
        path.write_text(json.dumps(rows))
    elif ext == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif ext == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        raise ValueError(ext)


FILE_CASES = [(fmt, ext) for fmt in FORMATS for ext in (".json", ".jsonl", ".csv", ".parquet")
              if not (fmt == "messages" and ext == ".csv")]


@pytest.mark.parametrize("fmt, ext", FILE_CASES)
def test_files_give_the_same_training_rows_as_the_list(fmt, ext, rows, tok, tmp_path):
    data = as_format(rows, fmt)
    path = tmp_path / f"train{ext}"
    write(data, path)

    assert read(path).num_rows == len(data)
    assert set(read(path).column_names) == set(data[0])
    from_file, _, fmt_file = prepare(str(path), tok)
    from_list, _, fmt_list = prepare(data, tok)
    assert fmt_file == fmt_list == detected(fmt)
    assert from_file.to_list() == from_list.to_list()


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        read(tmp_path / "train.jsonl")

    assert str(info.value).startswith("data.path: no such file")
    assert "train.jsonl" in str(info.value)


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("Even or odd? 12\neven\n")

    with pytest.raises(ConfigError) as info:
        read(str(path))

    message = str(info.value)
    assert "unsupported file type" in message
    for ext in (".json", ".jsonl", ".csv", ".parquet"):
        assert ext in message


@pytest.mark.parametrize("data", [["Even or odd? 12", "even"], [], [{"text": "ok"}, "not a dict"]])
def test_a_list_must_hold_dicts(data):
    with pytest.raises(ConfigError, match="must hold dicts"):
        read(data)


def test_unsupported_source():
    with pytest.raises(ConfigError, match="unsupported source"):
        read(42)


def test_columns_matching_no_format(tok):
    with pytest.raises(ConfigError) as info:
        prepare([{"question": "Even or odd? 12", "answer": "even"}], tok)

    message = str(info.value)
    assert message.startswith("data.format: cannot be read as any format")
    assert "question" in message and "answer" in message  # the columns it has
    for fmt in ("text", "alpaca", "messages", "prompt_completion"):
        assert fmt in message


def test_named_format_needs_its_columns(rows, tok):
    with pytest.raises(ConfigError) as info:
        prepare(as_format(rows, "text"), tok, format="alpaca")

    assert "needs columns ['instruction', 'output']" in str(info.value)


def test_unknown_format_name(rows, tok):
    with pytest.raises(ConfigError) as info:
        prepare(as_format(rows, "text"), tok, format="chat")

    assert "unknown format" in str(info.value)
    assert "prompt_completion" in str(info.value)


def test_train_suggests_the_nearest_format(rows, peft_model, tok, tmp_path):
    with pytest.raises(ConfigError, match="Did you mean 'alpaca'"):
        lora_nb.train(peft_model, tok, rows, format="alpacca", steps=1, output_dir=str(tmp_path / "run"))


def test_messages_need_a_chat_template(rows, llama):
    tok = AutoTokenizer.from_pretrained(llama)
    tok.chat_template = None

    with pytest.raises(ConfigError, match="chat template"):
        prepare(as_format(rows, "messages"), tok)


# --- eval data -------------------------------------------------------------------------------------


def test_eval_fraction_splits_the_rows(tok):
    data = [{"text": f"example number {i}"} for i in range(16)]

    train, held, _ = prepare(data, tok, eval=0.25)

    train_texts, held_texts = set(train["text"]), set(held["text"])
    assert (len(train), len(held)) == (12, 4)
    assert not train_texts & held_texts
    assert train_texts | held_texts == {r["text"] for r in data}
    again, _, _ = prepare(data, tok, eval=0.25)  # the same seed, the same split
    assert again["text"] == train["text"]


def test_eval_file(rows, parity, tok, tmp_path):
    path = tmp_path / "other.jsonl"
    write(parity[1], path)

    train, held, fmt = prepare(rows, tok, eval=str(path))

    assert len(train) == len(rows)
    assert held.to_list() == prepare(parity[1], tok)[0].to_list()


def test_eval_file_must_match_the_format(rows, tok, tmp_path):
    path = tmp_path / "other.jsonl"
    write(as_format(rows, "text"), path)

    with pytest.raises(ConfigError, match="needs columns"):
        prepare(rows, tok, eval=str(path))


def test_eval_split_of_a_dataset_dict(rows, parity, tok):
    data = DatasetDict(train=Dataset.from_list(rows), test=Dataset.from_list(parity[1]))

    train, held, _ = prepare(data, tok, eval="test")

    assert (len(train), len(held)) == (len(rows), len(parity[1]))


def test_train_with_an_eval_file_logs_eval_loss(rows, parity, llama, tmp_path):
    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, verbose=False)
    path = tmp_path / "other.jsonl"
    write(parity[1], path)

    run = lora_nb.train(model, tok, rows, eval=str(path), eval_steps=1, steps=2, batch_size=4, max_length=64,
                        output_dir=str(tmp_path / "run"), progress=False)

    eval_losses = [h["eval_loss"] for h in run.history if "eval_loss" in h]
    assert len(eval_losses) == 2 and all(math.isfinite(x) for x in eval_losses)
    assert run.recipe.data.eval == str(path)


# --- files that cannot be read, rows that cannot be trained on --------------------------------------


def one_paragraph(error: ConfigError) -> str:
    message = str(error)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize("name, content", [("train.jsonl", ""), ("train.jsonl", "\n\n  \n"), ("train.json", "[]"),
                                           ("train.csv", ""), ("train.csv", "instruction,output\n"),
                                           ("train.parquet", "")])
def test_a_file_without_rows(name, content, tmp_path):
    path = tmp_path / name
    path.write_text(content)

    with pytest.raises(ConfigError) as info:
        read(path)

    message = one_paragraph(info.value)
    assert message.startswith(f"data.path: {path} has no rows")


@pytest.mark.parametrize("bad_line, reason", [('{"text": "a"', "Expecting ',' delimiter"),
                                              ("not json", "Expecting value"),
                                              ('"just text"', "not a JSON object")])
def test_malformed_jsonl_names_the_first_bad_line(bad_line, reason, tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(f'{{"text": "one"}}\n\n{{"text": "two"}}\n{bad_line}\n{{"text": "five"}}\nnot json either\n')

    with pytest.raises(ConfigError) as info:
        prepare(str(path), None)

    message = one_paragraph(info.value)
    assert message.startswith(f"data.path: line 4 of {path}")  # the blank line 2 counts, the later bad line does not
    assert reason in message and bad_line in message


def test_malformed_json_array_names_the_line(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('[\n  {"text": "one"},\n  {"text": \'two\'}\n]\n')

    with pytest.raises(ConfigError) as info:
        read(path)

    assert one_paragraph(info.value) == f"data.path: {path} is not valid JSON: Expecting value at line 3, column 12."


@pytest.mark.parametrize("name, content", [("train.jsonl", '{"text": "ok"}\n{"text": "caf\xe9"}\n'),
                                           ("train.csv", "text\nok\ncaf\xe9\n"),
                                           ("train.json", '[{"text": "ok"},\n {"text": "caf\xe9"}]')])
def test_a_file_that_is_not_utf8(name, content, tmp_path):
    path = tmp_path / name
    path.write_bytes(content.encode("latin-1"))

    with pytest.raises(ConfigError) as info:
        read(path)

    message = one_paragraph(info.value)
    line = 3 if name.endswith(".csv") else 2
    assert message == f"data.path: {path} is not UTF-8 text (byte 0xe9 on line {line}); re-save the file as UTF-8."


def test_a_utf8_file_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes('{"text": "café"}\n'.encode("utf-8-sig"))

    assert read(path).to_list() == [{"text": "café"}]


@pytest.mark.parametrize("name, content, reason", [
    ("train.csv", 'text\n"an open quote\n', "ParserError: Error tokenizing data. C error: EOF inside string"),
    ("train.parquet", "not a parquet file", "ArrowInvalid: Parquet magic bytes not found in footer"),
])
def test_a_file_that_fails_to_parse_gives_the_reason(name, content, reason, tmp_path):
    path = tmp_path / name
    path.write_text(content)

    with pytest.raises(ConfigError) as info:
        read(path)

    message = one_paragraph(info.value)
    assert message.startswith(f"data.path: {path} could not be read ({reason}")


def test_an_unknown_dataset_name(tmp_path):
    with pytest.raises(ConfigError) as info:
        read("no-such-user/no-such-dataset")

    message = one_paragraph(info.value)
    assert message.startswith("data.path: no-such-user/no-such-dataset is neither a data file "
                              "nor a saved dataset folder")


ALPACA = {"instruction": "Even or odd? 12", "input": "", "output": "even"}
CHAT = [{"role": "user", "content": "Even or odd? 12"}, {"role": "assistant", "content": "even"}]


@pytest.mark.parametrize("bad, fmt, missing", [
    ({**ALPACA, "output": None}, "alpaca", "no 'output'"),
    ({"instruction": "Even or odd? 12"}, "alpaca", "no 'output'"),
    ({"text": "a text row mixed in"}, "alpaca", "no 'instruction' and no 'output'"),
    ({"prompt": "2+2=", "completion": "4"}, "alpaca", "no 'instruction' and no 'output'"),
    ({"messages": [CHAT[0], {"role": "assistant", "content": None}]}, "messages", "a message with no 'content'"),
    ({"messages": [CHAT[0], {"content": "even"}]}, "messages", "a message with no 'role'"),
    ({"messages": None}, "messages", "no 'messages'"),
])
def test_rows_with_missing_fields_are_refused(bad, fmt, missing, tok):
    good = {"alpaca": ALPACA, "messages": {"messages": CHAT}}[fmt]
    data = [good] * 6 + [bad] + [good, bad]

    with pytest.raises(ConfigError) as info:
        prepare(data, tok, eval=0.5)  # checked before the split, so row numbers are the list's

    message = one_paragraph(info.value)
    assert message.startswith(f"data: row 7 of the rows given has {missing} (null or missing); every {fmt} row needs")


@pytest.mark.parametrize("first, fmt, missing", [({"text": "a text row"}, "text", "no 'text'"),
                                                 ({"prompt": "2+2=", "completion": "4"}, "prompt_completion",
                                                  "no 'prompt' and no 'completion'")])
def test_a_mixed_list_is_refused_at_the_first_row_of_another_format(first, fmt, missing, tok):
    with pytest.raises(ConfigError) as info:
        prepare([first, first, ALPACA], tok)

    assert one_paragraph(info.value).startswith(f"data: row 3 of the rows given has {missing} (null or missing); "
                                                f"every {fmt} row")


def test_a_none_completion_is_refused(tok):
    with pytest.raises(ConfigError, match="row 2 of the rows given has no 'completion'"):
        prepare([{"prompt": "2+2=", "completion": "4"}, {"prompt": "3+3=", "completion": None}], tok)


def test_alpaca_input_may_be_null_or_empty(tok):
    data = [{**ALPACA, "input": None}, {**ALPACA, "input": ""}, {k: v for k, v in ALPACA.items() if k != "input"}]

    train, _, fmt = prepare(data, tok)

    assert fmt == "alpaca"
    assert [r["prompt"][0]["content"] for r in train] == ["Even or odd? 12"] * 3


def test_a_null_field_in_a_file_names_the_file_and_row(tmp_path, tok):
    path = tmp_path / "train.jsonl"
    write([ALPACA, ALPACA, {**ALPACA, "output": None}], path)

    with pytest.raises(ConfigError) as info:
        prepare(str(path), tok)

    assert one_paragraph(info.value).startswith(f"data.path: row 3 of {path} has no 'output'")


@pytest.mark.parametrize("content, problem", [('{"instruction": "a", "output": null}\n',
                                               "row 1 of {path} has no 'output'"),
                                              ("", "{path} has no rows"),
                                              ("{oops\n", "line 1 of {path} is not valid JSON")])
def test_eval_file_errors_name_data_eval(content, problem, tmp_path, tok):
    path = tmp_path / "held.jsonl"
    path.write_text(content)

    with pytest.raises(ConfigError) as info:
        prepare([ALPACA] * 4, tok, eval=str(path))

    assert one_paragraph(info.value).startswith("data.eval: " + problem.format(path=path))


def test_eval_fraction_that_leaves_no_training_rows(tok):
    data = [{"text": f"example number {i}"} for i in range(4)]

    with pytest.raises(ConfigError) as info:
        prepare(data, tok, eval=0.99)

    message = one_paragraph(info.value)
    assert message == ("data.eval: holds out every row (4 of 4), leaving none to train on; "
                       "with 4 rows use a fraction of at most 0.75, or an eval file (got 0.99).")
    train, held, _ = prepare(data, tok, eval=0.75)  # the fraction it suggests works
    assert (len(train), len(held)) == (1, 3)
    train, held, _ = prepare(data, tok, eval=0.01)  # a small fraction still holds out one row
    assert (len(train), len(held)) == (3, 1)


def test_one_row_cannot_be_split(tok):
    with pytest.raises(ConfigError, match=r"holds out every row \(1 of 1\), leaving none to train on; give more rows"):
        prepare([{"text": "only one"}], tok, eval=0.5)


def test_a_conversation_without_an_answer_is_refused(tok):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
            {"messages": [{"role": "user", "content": "anyone there?"}]}]
    with pytest.raises(lora_nb.ConfigError, match=r"row 2 of the rows given has no 'assistant' turn"):
        prepare(rows, tok)


def test_preview_masks_are_the_labels_the_trainer_computes_its_loss_on(tok, llama, tmp_path, monkeypatch):
    """preview() goes through TRL's public interface (a trainer on a stand-in model): its loss mask
    must be the one a real training run's batches carry, and it must leave the random state alone."""
    import random

    import torch

    import lora_nb

    rows = [{"prompt": f"{a}+{a}=", "completion": str(2 * a)} for a in range(10, 14)]
    shown = lora_nb.preview(rows, tok, n=4).rows
    state = torch.random.get_rng_state(), random.getstate()
    lora_nb.preview(rows, tok, n=4)
    assert torch.equal(torch.random.get_rng_state(), state[0]) and random.getstate() == state[1]

    seen = []
    from trl import SFTTrainer

    original = SFTTrainer.compute_loss

    def spy(self, model, inputs, *a, **kw):
        seen.extend(zip(inputs["input_ids"].tolist(), inputs["labels"].tolist()))
        return original(self, model, inputs, *a, **kw)

    monkeypatch.setattr(SFTTrainer, "compute_loss", spy)
    model, _ = lora_nb.load(llama)
    model = lora_nb.inject(model, r=2, verbose=False)
    lora_nb.train(model, tok, rows, steps=1, batch_size=4, group_by_length=False, output_dir=str(tmp_path / "run"),
                  progress=False)
    trained = sorted([tok.decode([i]) for i, label in zip(ids, labels) if label != -100] for ids, labels in seen)
    previewed = sorted([t for t, loss in row if loss] for row in shown)
    assert trained == previewed and all(previewed)


def test_previews_checks_estimates_and_scores_leave_the_working_folder_as_it_was(llama, in_tmp):
    """Each builds a real SFTTrainer to prepare the rows as TRL does; transformers' Trainer makes its
    output folder, which used to appear in the notebook's folder (lora_nb-preview, -lengths, -evaluate)."""
    model, tok = lora_nb.load(llama)
    rows = [{"prompt": "2+2=", "completion": "4"}]
    lora_nb.preview(rows, tok)
    lora_nb.data.check(tok, rows)
    lora_nb.estimate(llama, data=rows, tokenizer=tok, device="cpu")
    lora_nb.evaluate(model, tok, rows, metric="token_accuracy")

    assert list(in_tmp.iterdir()) == []
