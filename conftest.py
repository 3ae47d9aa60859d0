"""Doctest fixtures: every ``Example:`` in lora_nb runs for real, offline, on a tiny local model.

Applies to lora_nb/'s doctests (tests/conftest.py serves the test suite). Nothing touches the
network. The tiny llama, its data files and a small recipe are built once a session, and only when a
doctest runs: ``pytest tests/`` pays nothing. Each doctest starts in a fresh folder holding:

- ``train.jsonl``, ``data.jsonl``, ``test.jsonl``: alpaca rows of the demo task (lora_nb.demo.tasks);
- ``my-model``, ``base-model``: the tiny llama (lora_nb.demo.tiny);
- ``recipe.yaml``: that model on that data, 2 steps;
- ``runs/20261128-101500``: a finished run of it (1 step), its adapter also at ``runs/x/adapter``;

and its namespace holds ``model`` and ``tok`` (the tiny llama, fp32), ``recipe`` (recipe.yaml's, fresh for each
doctest), ``lora_nb``, ``Recipe``, ``Path``.
``model`` is shared: examples that change a model load their own (``lora_nb.load("my-model")``).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["LORA_NB_BASE"] = "embedded"  # examples show the embedded model, whatever pretrained one is cached here

import pytest  # noqa: E402

RECIPE = """\
model: {name: my-model, dtype: fp32}
lora: {r: 4, targets: attention}
data: {path: train.jsonl}
train: {steps: 2, batch_size: 4, max_length: 64}
"""


@pytest.fixture(scope="session")
def doctest_world(tmp_path_factory):
    """The folder every doctest's files are copied from, and the shared (model, tok)."""
    import json
    import shutil

    import lora_nb
    from lora_nb.demo import tasks
    from lora_nb.demo.tiny import tiny_model

    if not os.environ.get("LORA_NB_CACHE"):  # tests/conftest.py's model_cache sets it when tests run too
        os.environ["LORA_NB_CACHE"] = os.environ.get("LORA_NB_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    source = tmp_path_factory.mktemp("doctest_world")
    train, test = tasks.split(16, 4)
    for name, rows in (("train.jsonl", train), ("data.jsonl", train), ("test.jsonl", test)):
        (source / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    (source / "recipe.yaml").write_text(RECIPE)
    model_dir = tiny_model("llama")
    model, tok = lora_nb.load(str(model_dir), dtype="fp32")
    trained, _ = lora_nb.load(str(model_dir), dtype="fp32")
    peft = lora_nb.inject(trained, r=4, targets="attention", verbose=False)
    run_dir = source / "runs" / "20261128-101500"
    lora_nb.train(peft, tok, train, steps=1, batch_size=4, max_length=64, output_dir=str(run_dir), progress=False)
    shutil.copytree(run_dir / "adapter", source / "runs" / "x" / "adapter")
    return source, model_dir, model, tok


@pytest.fixture(autouse=True)
def _doctest_folder(request, tmp_path, monkeypatch):
    """Only for doctests: run from a fresh folder holding the files examples name."""
    if type(request.node).__name__ != "DoctestItem":  # a doctest of lora_nb (pytest names its class so)
        yield
        return
    import shutil
    from pathlib import Path

    import lora_nb
    from lora_nb import Recipe

    source, model_dir, model, tok = request.getfixturevalue("doctest_world")
    shutil.copytree(source, tmp_path, dirs_exist_ok=True)
    for name in ("my-model", "base-model"):
        (tmp_path / name).symlink_to(model_dir, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace = request.getfixturevalue("doctest_namespace")
    namespace.update(model=model, tok=tok, recipe=Recipe.from_yaml(RECIPE), lora_nb=lora_nb, Recipe=Recipe, Path=Path)
    yield
