"""Data that would train silently wrong, and data too large to prepare in a blink.

Every text field of every format is a string, or the row is refused with its number, field and
type; data that leaves nothing to learn is refused, data that mostly does gets a note. Large data
is prepared in batches a Ctrl-C can stop, long texts are cut before tokenising to what
``max_length`` keeps anyway. Real datasets, the tiny llama's real tokenizer, TRL's own
tokenisation; no time is asserted but against another time of the same process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pandas as pd
import pytest
from datasets import Dataset
from transformers import AutoTokenizer

import lora_nb
from lora_nb.hf.compat import sft_config
from lora_nb.data.prepare import kept_tokens, prepare
from lora_nb.data.preview import preview, trl_prepare
from lora_nb.core.errors import ConfigError, LoraNbWarning
from lora_nb.recipe.schema import TrainSection

USER, ANSWER = {"role": "user", "content": "Even or odd? 12"}, {"role": "assistant", "content": "even"}
GOOD = {"text": {"text": "Even or odd? 12 even"},
        "alpaca": {"instruction": "Even or odd?", "input": "12", "output": "even"},
        "messages": {"messages": [USER, ANSWER]},
        "prompt_completion": {"prompt": "Even or odd? 12\n", "completion": "even"}}


@pytest.fixture(scope="module")
def tok(llama):
    return AutoTokenizer.from_pretrained(llama)


def refusal(data, tok, **kw) -> str:
    with pytest.raises(ConfigError) as info:
        prepare(data, tok, **kw)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def write_jsonl(rows: list[dict], path) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# --- every text field is a string -------------------------------------------------------------------

NOT_STRINGS = [({"q": "Is 0 even?"}, "a dict ({'q': 'Is 0 even?'})"), (["even"], "a list (['even'])"),
               (4, "a number (4)"), (2.5, "a number (2.5)"), (True, "a bool (True)")]
TEXT_FIELDS = [("text", "text"), ("alpaca", "instruction"), ("alpaca", "input"), ("alpaca", "output"),
               ("prompt_completion", "prompt"), ("prompt_completion", "completion")]


@pytest.mark.parametrize("value, kind", NOT_STRINGS, ids=["dict", "list", "int", "float", "bool"])
@pytest.mark.parametrize("fmt, field", TEXT_FIELDS, ids=[f"{f}.{c}" for f, c in TEXT_FIELDS])
@pytest.mark.parametrize("where", ["every-row", "one-row-of-a-list", "one-line-of-a-file"])
def test_a_text_field_that_is_no_string_is_refused(fmt, field, value, kind, where, tok, tmp_path):
    bad = {**GOOD[fmt], field: value}
    rows = [bad] * 3 if where == "every-row" else [GOOD[fmt]] * 3 + [bad] + [GOOD[fmt]]
    data = write_jsonl(rows, tmp_path / "train.jsonl") if where == "one-line-of-a-file" else rows
    row = 1 if where == "every-row" else 4

    message = refusal(data, tok)

    source = data if isinstance(data, str) else "the rows given"
    assert message.startswith(f"data{'.path' if isinstance(data, str) else ''}: row {row} of {source} has "
                              f"'{field}' as {kind}, not a string")


def test_parquet_types_are_checked_too(tok, tmp_path):
    path = tmp_path / "train.parquet"
    pd.DataFrame([{"instruction": "Even or odd?", "output": 1},
                  {"instruction": "Even or odd?", "output": 0}]).to_parquet(path)

    assert refusal(str(path), tok).startswith(f"data.path: row 1 of {path} has 'output' as a number (1), not a string")


def test_a_csv_file_is_text_as_written(tok, tmp_path):
    """CSV has no types: "007" stays "007" (pandas would make it the number 7, and numbers are refused)."""
    path = tmp_path / "train.csv"
    path.write_text("instruction,input,output\nEven or odd?,007,odd\nEven or odd?,,even\nHow many?,12,12\n")

    train, _, fmt = prepare(str(path), tok)

    assert [r["prompt"][0]["content"] for r in train] == ["Even or odd?\n\n007", "Even or odd?", "How many?\n\n12"]
    assert train[2]["completion"][0]["content"] == "12"


def test_keys_that_only_later_rows_have_are_kept(tok):
    rows = [{"instruction": "Even or odd?", "output": "even"},
            {"instruction": "Even or odd?", "input": "7", "output": "odd"}]

    train, _, _ = prepare(rows, tok)

    assert train[1]["prompt"][0]["content"] == "Even or odd?\n\n7"


@pytest.mark.parametrize("data, message", [
    (Dataset.from_dict({"text": []}), "data: the rows given has no rows."),
    ([{}, {}], "data.format: cannot be read as any format (got 'columns []')."),
])
def test_rows_without_anything_in_them(data, message, tok):
    assert refusal(data, tok).startswith(message)


def test_an_extra_column_of_mixed_types_is_named(tok):
    rows = [{**GOOD["text"], "id": 1}, {**GOOD["text"], "id": "two"}]

    message = refusal(rows, tok)

    assert message == ("data: row 2 of the rows given has 'id' as a string ('two') where row 1 has a number; "
                       "a field holds one type in every row; fix or drop that row.")


# --- chat messages ------------------------------------------------------------------------------------

MESSAGE_FAULTS = [
    ([USER, {"role": "assistant"}], "a message with no 'content' (null or missing)"),
    ([{"role": "user"}, {"role": "assistant"}], "a message with no 'content' (null or missing)"),
    ([USER, {"role": "assistant", "content": None}], "a message with no 'content' (null or missing)"),
    ([USER, {"content": "even"}], "a message with no 'role' (null or missing)"),
    ([USER, {"role": "assistant", "content": [{"type": "text", "text": "even"}]}],
     "a message with 'content' as a list ([{'type': 'text', 'text': 'even'}]), not a string"),
    ([USER, {"role": "assistant", "content": {"text": "even"}}],
     "a message with 'content' as a dict ({'text': 'even'}), not a string"),
    ([USER, {"role": "assistant", "content": 0}], "a message with 'content' as a number (0), not a string"),
    ([{"role": 1, "content": "hi"}, ANSWER], "a message with 'role' as a number (1), not a string"),
    ("Even or odd? 12", "'messages' as a string ('Even or odd? 12'), not a list of messages"),
    (["Even or odd? 12", "even"], "'messages' as a list (['Even or odd? 12', 'even']), not a list of messages"),
    ([USER], "no 'assistant' turn"),
    ([], "no 'assistant' turn"),
]


@pytest.mark.parametrize("messages, what", MESSAGE_FAULTS)
@pytest.mark.parametrize("where", ["alone", "after-good-rows", "in-a-file"])
def test_a_conversation_that_cannot_train_is_refused(messages, what, where, tok, tmp_path):
    rows = [{"messages": messages}] if where == "alone" else [GOOD["messages"]] * 2 + [{"messages": messages}]
    data = write_jsonl(rows, tmp_path / "chat.jsonl") if where == "in-a-file" else rows
    row = 1 if where == "alone" else 3

    message = refusal(data, tok)

    source = f"data.path: row {row} of {data}" if where == "in-a-file" else f"data: row {row} of the rows given"
    assert message.startswith(f"{source} has {what}")


def test_extra_keys_of_mixed_types_in_messages_do_not_stop_a_conversation(tok, tmp_path):
    """datasets keeps such a column as JSON text; role and content are still checked, the rest passes to TRL."""
    rows = [{"messages": [{**USER, "weight": 1}, ANSWER]}, {"messages": [{**USER, "weight": "high"}, ANSWER]}]
    path = write_jsonl(rows, tmp_path / "chat.jsonl")

    train, _, fmt = prepare(path, tok)

    assert fmt == "messages" and len(train) == 2
    bad = write_jsonl(rows + [{"messages": [{**USER, "weight": 2}, {"role": "assistant", "content": 7}]}],
                      tmp_path / "bad.jsonl")
    assert refusal(bad, tok).startswith(f"data.path: row 3 of {bad} has a message with 'content' as a number (7), "
                                        "not a string")


# --- prompt / completion --------------------------------------------------------------------------------

CONVERSATION = {"prompt": [USER], "completion": [ANSWER]}


def test_conversational_prompt_completion_trains(tok, llama, tmp_path):
    """TRL's conversational prompt/completion: both lists of messages, the completion alone carries loss."""
    model, _ = lora_nb.load(llama)
    model = lora_nb.inject(model, r=2, verbose=False)

    run = lora_nb.train(model, tok, [CONVERSATION] * 4, steps=1, batch_size=2, output_dir=str(tmp_path / "run"),
                        progress=False)

    losses = [h["loss"] for h in run.history if "loss" in h]
    assert run.status == "finished" and losses and all(loss > 0 for loss in losses)
    shown = preview([CONVERSATION], tok, n=1)
    assert shown.format == "prompt_completion" and shown.loss_text(0) == "even<|end|>"


@pytest.mark.parametrize("row, what", [
    ({"prompt": "Even or odd? 12\n", "completion": [ANSWER]},
     "'prompt' as a string and 'completion' as a list of messages"),
    ({"prompt": [USER], "completion": "even"}, "'completion' as a string and 'prompt' as a list of messages"),
    ({"prompt": "Even or odd? 12\n", "completion": ["even"]}, "'completion' as a list (['even']), not a string"),
    ({"prompt": [], "completion": [ANSWER]}, "no messages in 'prompt' (an empty list)"),
    ({"prompt": [USER], "completion": []}, "no messages in 'completion' (an empty list)"),
    ({"prompt": [USER], "completion": [{"role": "assistant", "content": 4}]},
     "a message with 'content' as a number (4)"),
])
def test_prompt_and_completion_are_both_text_or_both_conversations(row, what, tok):
    assert refusal([row], tok).startswith(f"data: row 1 of the rows given has {what}")


def test_conversations_need_a_chat_template(llama):
    plain = AutoTokenizer.from_pretrained(llama)
    plain.chat_template = None

    message = refusal([CONVERSATION], plain)

    assert message.startswith("data.format: with lists of messages as prompt and completion needs a tokenizer "
                              "with a chat template")
    assert prepare([GOOD["prompt_completion"]], plain)[2] == "prompt_completion"  # text needs none


# --- nothing to learn -------------------------------------------------------------------------------------

EMPTY = {"text": ({"text": ""}, "an empty 'text'"),
         "alpaca": ({"instruction": "Even or odd?", "input": "12", "output": " "}, "an empty 'output'"),
         "prompt_completion": ({"prompt": "Even or odd? 12\n", "completion": ""}, "an empty 'completion'"),
         "conversational": ({"prompt": [USER], "completion": [{"role": "assistant", "content": ""}]},
                            "an empty 'completion'"),
         "messages": ({"messages": [USER, {"role": "assistant", "content": "\n"}]}, "only empty assistant turns")}


@pytest.mark.parametrize("fmt", list(EMPTY))
def test_data_with_nothing_to_learn_is_refused(fmt, tok):
    row, what = EMPTY[fmt]

    message = refusal([row] * 5, tok)

    assert message.startswith(f"data: every row of the rows given has {what} (5 of 5): there is nothing to learn")


@pytest.mark.parametrize("fmt", list(EMPTY))
def test_data_with_mostly_nothing_to_learn_gets_a_note(fmt, tok, capsys):
    row, what = EMPTY[fmt]
    good = CONVERSATION if fmt == "conversational" else GOOD[fmt]

    train, _, _ = prepare([row] * 3 + [good], tok)

    assert len(train) == 4
    out, err = capsys.readouterr()  # a LoraNbWarning, shown as a note line during the call: no stderr box
    assert [line for line in out.splitlines() if line.startswith("note: ")] == [
        f"note: 3 of 4 rows of the rows given (75%) have {what}: they teach only the end-of-turn token"]
    assert "LoraNbWarning" not in err
    with warnings.catch_warnings():
        warnings.simplefilter("error", LoraNbWarning)
        with pytest.raises(LoraNbWarning):  # the category a user can filter
            prepare([row] * 3 + [good], tok)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LoraNbWarning)
        prepare([row] * 2 + [good] * 2, tok)  # half is not most


def test_an_eval_file_with_nothing_to_learn_names_data_eval(tok, tmp_path):
    path = write_jsonl([EMPTY["alpaca"][0]] * 2, tmp_path / "held.jsonl")

    assert refusal([GOOD["alpaca"]] * 4, tok, eval=path).startswith(f"data.eval: every row of {path} "
                                                                    "has an empty 'output'")


# --- eval settings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eval", [0, 1, 0.0, 1.0, -0.2, 5, True, float("nan")])
def test_an_eval_fraction_that_holds_out_nothing_or_everything_names_data_eval(eval, tok):
    message = refusal([GOOD["text"]] * 10, tok, eval=eval)

    assert message.startswith("data.eval: a fraction must be between 0 and 1; leave eval out for no eval rows")


@pytest.mark.parametrize("eval, start", [([], "data.eval: a list must hold dicts"),
                                         ([{"text": {"q": 1}}],
                                          "data.eval: row 1 of the rows given has 'text' as a dict"),
                                         (42, "data.eval: a fraction must be between 0 and 1")])
def test_eval_rows_given_in_memory_name_data_eval(eval, start, tok):
    assert refusal([GOOD["text"]] * 4, tok, eval=eval).startswith(start)


# --- long texts -----------------------------------------------------------------------------------------------

LONG = "the quick brown fox jumps over 12 lazy dogs. " * 20_000  # 900,000 characters


@pytest.mark.parametrize("fmt, row", [
    ("text", {"text": LONG}),
    ("alpaca", {"instruction": "Repeat:", "input": LONG, "output": LONG}),
    ("prompt_completion", {"prompt": "Repeat:\n", "completion": LONG}),
    ("messages", {"messages": [{"role": "user", "content": LONG}, {"role": "assistant", "content": LONG}]}),
])
def test_a_long_text_is_cut_to_what_max_length_keeps_and_trains_the_same_tokens(fmt, row, tok):
    short = {"text": "a short row"} if fmt == "text" else GOOD[fmt]
    cut, _, _ = prepare([row, short], tok, max_length=64)
    whole, _, _ = prepare([row, short], tok)

    assert len(json.dumps(cut[0])) < 10_000 < len(json.dumps(whole[0]))
    assert cut[1] == whole[1]  # a short row is left as it is
    config = sft_config(dict(output_dir="unused", report_to="none", max_length=64, bf16=False,
                             assistant_only_loss=fmt == "messages", dataset_num_proc=None))
    assert trl_prepare(cut, tok, config) == trl_prepare(whole, tok, config)


def test_nothing_is_cut_where_the_tokenizer_drops_characters(llama):
    """A normaliser that deletes characters can make a long text few tokens: its cut is tokenised first."""
    from tokenizers import normalizers

    dropping = AutoTokenizer.from_pretrained(llama)
    dropping.backend_tokenizer.normalizer = normalizers.Replace("~", "")
    row = {"text": "~" * 500_000 + " the words that are the tokens"}

    train, _, _ = prepare([row], dropping, max_length=64)

    assert train[0]["text"] == row["text"]


def test_preview_of_a_long_row_shows_its_first_max_length_tokens(tok):
    shown = preview([{"text": LONG}], tok, max_length=32)

    assert (len(shown.rows[0]) == 32
            and "".join(t for t, _ in shown.rows[0]) == LONG[:len("".join(t for t, _ in shown.rows[0]))])


@pytest.mark.parametrize("section, kept", [
    (TrainSection(max_length=256), 256),
    (TrainSection(max_length=256, packing=True), 256),  # bfd packing truncates each example as well
    (TrainSection(max_length=256, packing=True, sft={"packing_strategy": "wrapped"}), None),  # trains every chunk
    (TrainSection(max_length=256, packing=True, sft={"packing_strategy": "bfd_split"}), None),
    (TrainSection(max_length=256, sft={"truncation_mode": "keep_end"}), None),  # keeps the end
])
def test_texts_are_cut_only_where_trl_keeps_their_start(section, kept):
    assert kept_tokens(section) == kept


# --- large data -------------------------------------------------------------------------------------------------


def test_prepared_rows_are_cached_and_found_again(tok, tmp_path):
    """The conversion's fingerprint is stable, so datasets finds its result (and TRL's tokenised rows after it)
    again."""
    path = write_jsonl([GOOD["alpaca"]] * 50, tmp_path / "train.jsonl")

    first, _, _ = prepare(path, tok)
    again, _, _ = prepare(path, tok)

    assert first.cache_files and first.cache_files == again.cache_files


CHILD = r"""
import json, os, shutil, signal, sys, threading, time
from transformers import AutoTokenizer
from lora_nb.data.prepare import prepare

tokenizer, data = AutoTokenizer.from_pretrained(sys.argv[1]), sys.argv[2]
sys.setswitchinterval(1e-4)  # the watching thread gets its turns often enough to catch a stage of a few ms
start = time.monotonic()
prepare(data, tokenizer)
report = {"whole": time.monotonic() - start}
for n, stage in enumerate(sys.argv[3:]):
    suffix, function = stage.split(":")
    copy = f"{data}.{n}.jsonl"  # a file of its own: nothing of it is cached
    shutil.copy(data, copy)
    main, sent = threading.main_thread().ident, {}

    def watch():
        while "at" not in sent:
            frame = sys._current_frames().get(main)
            while frame is not None:
                if frame.f_code.co_name == function and frame.f_code.co_filename.endswith(suffix):
                    sent["at"] = time.monotonic()
                    os.kill(os.getpid(), signal.SIGINT)
                    return
                frame = frame.f_back
            time.sleep(0.001)

    threading.Thread(target=watch, daemon=True).start()
    try:
        prepare(copy, tokenizer)
        report[stage] = "finished"
    except KeyboardInterrupt:
        report[stage] = time.monotonic() - sent["at"]
print("REPORT " + json.dumps(report))
"""
# fingerprinting: datasets hashes the conversion under a bare ``except:`` that swallows a KeyboardInterrupt
# (datasets.fingerprint.update_fingerprint); prepare raises it again (lora_nb.core.interrupts).
STAGES = {"reading": "datasets/packaged_modules/json/json.py:_generate_tables",
          "checking": "lora_nb/data/checks.py:check_rows",
          "fingerprinting": "datasets/fingerprint.py:update_fingerprint",
          "converting": "datasets/arrow_dataset.py:_map_single"}


def test_ctrl_c_stops_preparing_large_data_in_every_stage(llama, tmp_path):
    """A real SIGINT the moment each stage runs ends prepare within a small part of the time the
    whole preparation takes (300,000 rows, about 30 MB)."""
    path = tmp_path / "big.jsonl"
    line = '{{"instruction": "Tell me whether the number is even or odd.", "input": "{0}", "output": "{1}"}}\n'
    with open(path, "w") as f:
        f.writelines(line.format(i, "odd" if i % 2 else "even") for i in range(300_000))
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "datasets")}

    done = subprocess.run([sys.executable, "-c", CHILD, llama, str(path), *STAGES.values()], capture_output=True,
                          text=True, timeout=600, env=env)

    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT "):])
    for stage, where in STAGES.items():
        assert report[where] != "finished", f"{stage}: prepare was not interrupted ({report})"
        assert report[where] < report["whole"] / 4, (
            f"{stage}: {report[where]:.2f} s to stop, of {report['whole']:.2f} s")


BAR_CHILD = r"""
import sys
from transformers import AutoTokenizer
from lora_nb.data.prepare import prepare

tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
for n in (100, 30_000):
    prepare([{"instruction": "Even or odd?", "input": str(i), "output": "odd" if i % 2 else "even"}
             for i in range(n)], tokenizer)
    sys.stderr.write(f"PREPARED {n}\n")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal")
@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "pipe"])
def test_a_progress_bar_shows_for_large_data_on_a_terminal(terminal, llama):
    import pty

    leader, follower = pty.openpty() if terminal else os.pipe()
    child = subprocess.Popen([sys.executable, "-c", BAR_CHILD, llama], stderr=follower, stdout=subprocess.DEVNULL)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the child
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    shown = out.decode(errors="replace")
    assert child.wait(timeout=300) == 0, shown[-2000:]
    small, large = shown.split("PREPARED 100")
    assert "converting rows" not in small  # a hundred rows take no time: no bar
    assert ("converting rows" in large and "/30000 [" in large) if terminal else "rows" not in large
    assert "Map" not in shown  # datasets' own bars stay hidden
