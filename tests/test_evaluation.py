"""evaluate(): held-out rows scored by exact match, containment, a function, or TRL's token accuracy."""

from __future__ import annotations

import json

import pytest

import lora_nb
from lora_nb import ConfigError
from lora_nb.hf.formats import alpaca_user_text
from lora_nb.runs.history import read_jsonl

STEPS = 16


@pytest.fixture(scope="module")
def trained(tiny, parity, tmp_path_factory):
    """(model, tok, run, TRL's eval mean_token_accuracy on the held-out rows after the last step)
    for a LoRA model trained on the parity task long enough to answer "even" or "odd"."""
    model, tok = lora_nb.load(str(tiny("llama", "demo")))
    model = lora_nb.inject(model, r=8, dropout=0.0, verbose=False)
    run = lora_nb.train(model, tok, parity[0], eval=parity[1], eval_steps=STEPS, steps=STEPS, lr=3e-3, warmup=0,
                        batch_size=8, max_length=64, save_steps=STEPS,
                        output_dir=str(tmp_path_factory.mktemp("eval") / "run"), progress=False)
    state = json.loads((run.dir / "checkpoints" / "trainer_state.json").read_text())
    logged = [h for h in state["log_history"] if h.get("step") == STEPS and "eval_mean_token_accuracy" in h]
    return model, tok, run, logged[0]["eval_mean_token_accuracy"]


def evaluate(trained, data, **kwargs):
    model, tok = trained[:2]
    return lora_nb.evaluate(model, tok, data, progress=False, **kwargs)


def test_exact_match_scores_the_greedy_answers(trained, parity):
    model, tok = trained[:2]
    held = parity[1]
    result = evaluate(trained, held)
    # 128 tokens: the short default cut nothing
    answers = lora_nb.generate(model, tok, [alpaca_user_text(r) for r in held])
    assert set(answers) <= {"even", "odd"}  # the model learned the answer's form; its score is what it got right
    assert [row[:3] for row in result.rows] == [(alpaca_user_text(r), r["output"], a) for r, a in zip(held, answers)]
    assert result.score == sum(a == r["output"] for a, r in zip(answers, held)) / len(held) > 0
    assert (result.metric, result.n) == ("exact_match", len(held))


def test_an_untrained_adapter_scores_nothing(tiny, parity):
    model, tok = lora_nb.load(str(tiny("llama", "demo")))
    model = lora_nb.inject(model, r=8, verbose=False)
    result = lora_nb.evaluate(model, tok, parity[1], metric="contains", progress=False)
    assert result.score == 0.0 and all(row[3] == 0.0 for row in result.rows)


def test_contains_ignores_case_and_a_function_scores_each_row(trained, parity):
    shouted = [{**r, "output": r["output"].upper()} for r in parity[1]]
    exact = evaluate(trained, parity[1])
    assert evaluate(trained, shouted).score == 0.0
    assert evaluate(trained, shouted, metric="contains").score == exact.score

    def same_word(prediction, reference):
        return prediction.lower() == reference.lower()

    custom = evaluate(trained, shouted, metric=same_word)
    assert (custom.metric, custom.score) == ("same_word", exact.score)
    assert [row[3] for row in custom.rows] == [row[3] for row in exact.rows]
    assert evaluate(trained, shouted, metric=lambda p, r: 0.25).score == 0.25


def test_token_accuracy_is_what_trl_logs(trained, parity):
    logged = trained[3]
    result = evaluate(trained, parity[1], metric="token_accuracy", batch_size=3)  # batches need not match TRL's
    assert result.score == pytest.approx(logged, abs=1 / 16)  # 16 answer tokens: "even"/"odd" and <|end|> per row
    assert {row[3] for row in result.rows} <= {0.0, 0.5, 1.0}
    assert all(row[2].endswith("<|end|>") for row in result.rows)  # the end of the turn counts, as in training


def test_run_keeps_each_score_and_paths_expand(trained, parity, tmp_path, monkeypatch):
    run = trained[2]
    monkeypatch.setenv("EVAL_DATA", str(tmp_path))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in parity[1]))
    first = evaluate(trained, "$EVAL_DATA/test.jsonl", limit=3, run=run)
    second = evaluate(trained, parity[1], metric="contains", run=run)
    assert [row[0] for row in first.rows] == [alpaca_user_text(r) for r in parity[1][:3]] and first.n == 3

    lines = read_jsonl(run.dir / "evals.jsonl")
    assert [set(line) for line in lines] == [{"metric", "score", "n", "data", "time"}] * 2
    assert [(line["metric"], line["score"], line["n"], line["data"]) for line in lines] == [
        ("exact_match", first.score, 3, str(tmp_path / "test.jsonl")), ("contains", second.score, 8, "8 rows given")]


def test_unknown_metric_names_the_allowed_ones(trained, parity):
    with pytest.raises(ConfigError, match="Allowed: exact_match, contains, token_accuracy. Did you mean 'exact_match'"):
        evaluate(trained, parity[1], metric="exact_macth")


def test_rows_without_a_reference_are_refused(trained, parity):
    rows = [dict(r) for r in parity[1][:3]]
    with pytest.raises(ConfigError, match="row 2 .*no 'output'"):
        evaluate(trained, [rows[0], {"instruction": "Even or odd?", "input": "5"}, rows[2]])
    with pytest.raises(ConfigError, match="row 3 of 3 rows given has an empty reference"):
        evaluate(trained, rows[:2] + [{**rows[2], "output": " "}])
    with pytest.raises(ConfigError, match="no reference answers"):
        evaluate(trained, [{"text": "even"}])
    with pytest.raises(ConfigError, match="list of 0 items"):
        evaluate(trained, [])


def test_conversations_are_scored_like_their_single_turn(trained, parity):
    chats = [{"messages": [{"role": "user", "content": alpaca_user_text(r)},
                           {"role": "assistant", "content": r["output"]}]}
             for r in parity[1]]
    assert evaluate(trained, chats).rows == evaluate(trained, parity[1]).rows
    with_system = [{"messages": [{"role": "system", "content": "Answer in one word."}] + c["messages"]} for c in chats]
    with pytest.raises(ConfigError, match="row 1 .*several turns \\(system, user\\).*token_accuracy"):
        evaluate(trained, with_system)
    assert evaluate(trained, with_system, metric="token_accuracy").n == len(chats)


def test_worst_rows_show_as_one_table_row_each(trained, parity):
    shouted = [{**r, "output": r["output"].upper()} for r in parity[1]]
    result = evaluate(trained, shouted)
    assert result.worst(2) == result.rows[:2]  # every row scored 0: the first ones, in order
    page = result._repr_html_()
    assert page.startswith("<p><b>exact_match 0.00 on 8 rows</b></p>")
    assert page.count("<tr>") == 1 + 5 and "\n" not in page and "?<br><br>" in page  # each prompt's blank line
    text = str(result).splitlines()
    assert text[0] == "exact_match 0.00 on 8 rows" and len(text) == 4 + 5  # headline, title, header, rule, 5 rows
    plain = json.loads(json.dumps(result.to_dict()))
    assert plain["score"] == 0.0 and plain["rows"][0]["reference"] == shouted[0]["output"]
