"""Score a model on held-out rows: generate each answer and compare it with the reference, or
measure teacher-forced token accuracy (the quantity TRL logs as ``mean_token_accuracy``).

Rows come in any source and format training reads (alpaca, prompt/completion, messages); the
prompt is what training shows the model, the reference is the output, the completion, or the last
assistant message. A score can be recorded in a run's folder (``evals.jsonl``, one line each).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from ..core.errors import ConfigError, strict_flags
from ..core.files import user_path
from ..core.progress import progress_bar
from ..core.quiet import quietly
from ..core.render import html_table, text_table

if TYPE_CHECKING:
    from ..runs.record import Run

# The named metrics: each scores one row from (the model's answer, the reference). token_accuracy
# scores tokens instead of generating (None here; see _token_accuracy). A new metric is one line.
SCORERS: dict[str, Optional[Callable[[str, str], Any]]] = {
    "exact_match": lambda prediction, reference: prediction.strip() == reference.strip(),
    "contains": lambda prediction, reference: reference.strip().lower() in prediction.lower(),
    "token_accuracy": None,
}
METRICS = tuple(SCORERS)
MARGIN = 8  # answer tokens beyond the longest reference: room for an answer to show it runs on
SHORT = 80  # characters of a prompt or an answer shown in the table of worst rows

Metric = Union[str, Callable[[str, str], Union[float, bool]]]


@dataclass(repr=False)
class Evaluation:
    """A model's score on held-out rows, and each row's prompt, reference, prediction and score.

    ``score`` is the mean of the rows' scores; for ``token_accuracy`` it is the fraction of all
    reference tokens predicted (each row weighs by its length; TRL counts so within a batch, then
    averages its batches). Prints as the score and a table of the worst rows; renders as HTML.

    Example:
        >>> result = Evaluation("exact_match", 0.5, 2, [("Even or odd?\\n\\n7", "odd", "odd", 1.0),
        ...                                              ("Even or odd?\\n\\n4", "even", "odd", 0.0)])
        >>> print(result)
        exact_match 0.50 on 2 rows
        worst rows
        row  prompt               reference  prediction  score
        ---  -------------------  ---------  ----------  -----
          2  Even or odd? ⏎  ⏎ 4  even       odd             0
    """

    metric: str
    score: float
    n: int
    rows: list[tuple[str, str, str, float]] = field(default_factory=list)

    _HEADERS = ["row", "prompt", "reference", "prediction", "score"]

    def worst(self, k: int = 5) -> list[tuple[str, str, str, float]]:
        """The ``k`` rows that scored lowest, lowest first (ties in data order).

        Example:
            >>> Evaluation("exact_match", 0.5, 2, [("a", "x", "x", 1.0), ("b", "y", "z", 0.0)]).worst(1)
            [('b', 'y', 'z', 0.0)]
        """
        return [self.rows[i] for i in self._worst(k)]

    def _worst(self, k: int) -> list[int]:
        return sorted(range(len(self.rows)), key=lambda i: self.rows[i][3])[:k]

    def _table(self, k: int = 5) -> list[list[Any]]:
        """The worst rows that lost points, shortened for display, with their 1-based row numbers."""
        return [[i + 1, _short(p), _short(r), _short(a), s] for i in self._worst(k)
                for p, r, a, s in [self.rows[i]] if s < 1]

    def _headline(self) -> str:
        return f"{self.metric} {self.score:.2f} on {self.n} row{'s' if self.n != 1 else ''}"

    def __str__(self) -> str:
        rows = self._table()
        return self._headline() + ("\n" + text_table(self._HEADERS, rows, title="worst rows") if rows else "")

    def __repr__(self) -> str:
        return f"Evaluation(metric={self.metric!r}, score={self.score:.4g}, n={self.n})"

    def _repr_html_(self) -> str:
        rows = self._table()
        head = f"<p><b>{self._headline()}</b></p>"
        if not rows:
            return head
        # its own markup has no newlines: these are the cells'
        table = html_table(self._HEADERS, rows, title="worst rows")
        return head + table.replace("\n", "<br>").replace("<td>", "<td style='text-align:left;vertical-align:top'>")

    def to_dict(self) -> dict:
        """The result as plain data (for JSON).

        Example:
            >>> Evaluation("contains", 1.0, 1, [("Q", "a", "A!", 1.0)]).to_dict()["rows"][0]["prediction"]
            'A!'
        """
        return {"metric": self.metric, "score": self.score, "n": self.n,
                "rows": [dict(zip(("prompt", "reference", "prediction", "score"), row)) for row in self.rows]}


@strict_flags
@quietly()
def evaluate(model: Any, tokenizer: Any, data: Any, *, metric: Metric = "exact_match", limit: Optional[int] = None,
             max_new_tokens: Optional[int] = None, batch_size: int = 16, run: Optional["Run"] = None,
             columns: Optional[Union[dict, str]] = None, progress: bool = True) -> Evaluation:
    """Score ``model`` on the rows of ``data`` against their reference answers.

    ``data``: any source :func:`lora_nb.train` reads (a file, a Hub name, a Dataset, a list of
    dicts) in alpaca, prompt/completion or messages format, under its own column names with
    ``columns`` (as ``data.columns`` in training: ``{"question": "instruction", "answer": "output"}``
    or ``"question:instruction,answer:output"``); ``limit`` keeps the first rows.
    ``metric``:

    - ``"exact_match"``: the greedy answer equals the reference (both stripped);
    - ``"contains"``: the reference appears in the answer (case-insensitive);
    - ``"token_accuracy"``: no generation; the fraction of reference tokens the model predicts
      (argmax) from the prompt and the reference tokens before them, counted as TRL's
      ``mean_token_accuracy`` counts them (its tokenisation, the end-of-turn token included);
    - a function ``(prediction, reference) -> float or bool``.

    Answers are generated greedily in batches of ``batch_size``, at most ``max_new_tokens`` long:
    by default the longest reference's tokens plus a few (never over 128: pass more for longer
    answers). ``run`` (a :class:`~lora_nb.runs.record.Run`) gets the score appended to its
    ``evals.jsonl``.

    A conversation's earlier turns (a system prompt, a dialogue) reach the model only under
    ``token_accuracy``: :func:`lora_nb.generate` answers one user turn.

    Example:
        >>> result = evaluate(model, tok, "test.jsonl", metric="contains", max_new_tokens=4)
        >>> result.score, len(result.worst(3))   # the tiny model is untrained
        (0.0, 3)
    """
    from ..runs.busy import check_not_training
    from ..runs.record import Run

    name, score_of = _metric(metric)
    if run is not None and not isinstance(run, Run):
        raise ConfigError("run", type(run).__name__, problem="must be a lora_nb Run (what lora_nb.train returns, "
                          "or lora_nb.Run.load(folder))")
    for key, value in (("batch_size", batch_size), ("max_new_tokens", max_new_tokens), ("limit", limit)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(key, value, problem="must be a whole number of at least 1")
    check_not_training(model, "evaluating")
    source = _describe(data)
    cases = _cases(data, tokenizer, limit, source, columns)
    references = [_text(completion) for _, completion in cases]
    with progress_bar(total=len(cases), desc=f"evaluate ({name})", unit="row", disable=not progress) as bar:
        if name == "token_accuracy":
            counts = _token_accuracy(model, tokenizer, cases, batch_size, bar)
            predictions = [text for _, _, text in counts]
            scores = [right / total if total else 0.0 for right, total, _ in counts]
            score = sum(c[0] for c in counts) / max(1, sum(c[1] for c in counts))
        else:
            prompts = [_user_turn(prompt, i, source) for i, (prompt, _) in enumerate(cases)]
            if max_new_tokens is None:
                max_new_tokens = _answer_room(tokenizer, references)
            predictions = _answers(model, tokenizer, prompts, batch_size, max_new_tokens, bar)
            scores = [_score(score_of, name, p, r, i) for i, (p, r) in enumerate(zip(predictions, references))]
            score = sum(scores) / len(scores)
    rows = [(_text(case[0]), ref, pred, s) for case, ref, pred, s in zip(cases, references, predictions, scores)]
    result = Evaluation(name, score, len(cases), rows)
    if run is not None:
        _record(run, result, source)
    return result


def _metric(metric: Metric) -> tuple[str, Optional[Callable[[str, str], Any]]]:
    """The metric's name and its row score function (None for token_accuracy)."""
    if callable(metric):
        return getattr(metric, "__name__", type(metric).__name__), metric
    if metric in SCORERS:
        return metric, SCORERS[metric]
    raise ConfigError("metric", metric, problem="unknown metric (or pass a function (prediction, reference) -> score)",
                      allowed=METRICS)


def _score(score_of: Callable[[str, str], Any], name: str, prediction: str, reference: str, i: int) -> float:
    value = score_of(prediction, reference)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError("metric", name, problem=f"returned {value!r} for row {i + 1}; a metric returns a number "
                          "(0 to 1) or a bool") from None


def _describe(data: Any) -> str:
    """The data in a few words, for evals.jsonl and errors: its path or Hub name, else what it is."""
    if isinstance(data, (str, os.PathLike)):
        return str(user_path(data))
    if isinstance(data, list):
        return f"{len(data)} rows given"
    rows = getattr(data, "num_rows", None)
    return f"a {type(data).__name__}" + (f" of {rows} rows" if isinstance(rows, int) else "")


def _cases(data: Any, tokenizer: Any, limit: Optional[int], source: str,
           columns: Optional[Union[dict, str]] = None) -> list[tuple[Any, Any]]:
    """(prompt, completion) per row, as training sees them: text, or chat turns where the tokenizer
    has a chat template. Read and checked by lora_nb.data.prepare (its errors name the file and the row)."""
    from ..data.prepare import prepare

    rows, _, fmt = prepare(source if isinstance(data, (str, os.PathLike)) else data, tokenizer, columns=columns)
    if fmt == "text":
        raise ConfigError("data.format", fmt, problem="has no reference answers to score against; give alpaca "
                          "(instruction/output), prompt/completion or messages rows")
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    cases = []
    for i, row in enumerate(rows):
        if "messages" in row:  # kept whole by to_sft_dataset: the reference is the last assistant turn
            turns = row["messages"]
            last = max(j for j, m in enumerate(turns) if m["role"] == "assistant")
            prompt, completion = turns[:last], turns[last:last + 1]
        else:
            prompt, completion = row["prompt"], row["completion"]
        if not _text(completion).strip():
            raise ConfigError("data", problem=f"row {i + 1} of {source} has an empty reference answer; "
                                              "every row needs one")
        cases.append((prompt if isinstance(prompt, list) else str(prompt),
                      completion if isinstance(completion, list) else str(completion)))
    return cases


def _text(value: Any) -> str:
    """A prompt or completion as text: a string as it is, a lone turn's content, or turns as ``role: content`` lines."""
    if isinstance(value, str):
        return value
    if len(value) == 1:
        return str(value[0]["content"])
    return "\n".join(f"{m['role']}: {m['content']}" for m in value)


def _user_turn(prompt: Any, i: int, source: str) -> str:
    """What :func:`lora_nb.generate` takes: text (chat-templated there when the tokenizer has a template)."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and prompt[0]["role"] == "user":
        return str(prompt[0]["content"])
    roles = ", ".join(m["role"] for m in prompt)
    raise ConfigError("data", problem=f"row {i + 1} of {source} asks with several turns ({roles}), and generation "
                      "answers one user turn; score it with metric='token_accuracy'")


def _answer_room(tokenizer: Any, references: list[str]) -> int:
    from .generation import MAX_NEW_TOKENS

    longest = max(len(ids) for ids in tokenizer(references, add_special_tokens=False)["input_ids"])
    return min(longest + MARGIN, MAX_NEW_TOKENS)


def _answers(model: Any, tokenizer: Any, prompts: list[str], batch_size: int, max_new_tokens: int,
             bar: Any) -> list[str]:
    from .generation import generate

    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        answers += generate(model, tokenizer, chunk, max_new_tokens=max_new_tokens)
        bar.update(len(chunk))
    return answers


def _token_accuracy(model: Any, tokenizer: Any, cases: list[tuple[Any, Any]], batch_size: int,
                    bar: Any) -> list[tuple[int, int, str]]:
    """(tokens predicted right, reference tokens, the predicted tokens as text) per case.

    TRL's own tokenisation and loss mask (:func:`lora_nb.data.preview.trl_prepare`, no truncation); a
    position counts when the argmax of the logits before it is its label, as TRL's ``is_top1``.
    Only the logits from the first answer token on are computed (``logits_to_keep``): a full
    vocabulary's logits for every prompt token would take gigabytes.
    """
    import torch
    from datasets import Dataset
    from torch.nn.utils.rnn import pad_sequence
    from ..hf.compat import sft_config
    from ..data.preview import STAND_IN, trl_prepare
    from ..hf.models import pin_4bit_layout

    config = sft_config(dict(output_dir=STAND_IN, report_to="none", max_length=None, bf16=False,
                             completion_only_loss=True, dataset_num_proc=None))
    rows = Dataset.from_list([{"prompt": p, "completion": c} for p, c in cases])
    tokenized = trl_prepare(rows, tokenizer, config)
    pin_4bit_layout(model)  # inference must not repack 4-bit weights on AVX512-BF16 CPUs (see there)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    counts = []
    try:
        model.eval()
        for start in range(0, len(tokenized), batch_size):
            chunk = tokenized[start:start + batch_size]
            ids = pad_sequence([torch.tensor(x) for x, _ in chunk], batch_first=True, padding_value=pad)
            mask = pad_sequence([torch.ones(len(x), dtype=torch.long) for x, _ in chunk], batch_first=True)
            labels = pad_sequence([torch.tensor(y) for _, y in chunk], batch_first=True, padding_value=-100)
            first = max(0, int((labels != -100).int().argmax(dim=1).min()) - 1)  # the first logit that predicts a label
            with torch.no_grad():
                logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                               logits_to_keep=ids.shape[1] - first).logits
            predicted = logits[:, :-1].argmax(dim=-1).cpu()
            targets = labels[:, first + 1:]
            counted = targets != -100
            for row in range(len(targets)):
                right = int(((predicted[row] == targets[row]) & counted[row]).sum())
                text = tokenizer.decode(predicted[row][counted[row]])
                counts.append((right, int(counted[row].sum()), text))
            bar.update(len(targets))
    finally:
        model.train(was_training)
    return counts


def _record(run: "Run", result: Evaluation, source: str) -> None:
    """Append the score to ``run.dir / "evals.jsonl"`` in one write, so a reader (another process
    showing the run) sees whole lines only."""
    line = json.dumps({"metric": result.metric, "score": result.score, "n": result.n, "data": source,
                       "time": datetime.now().isoformat(timespec="seconds")}) + "\n"
    fd = os.open(run.dir / "evals.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _short(text: str, width: int = SHORT) -> str:
    """``text`` at most ``width`` characters: its start and end around an ellipsis."""
    if len(text) <= width:
        return text
    half = (width - 1) // 2
    return text[:half] + "…" + text[len(text) - (width - 1 - half):]
