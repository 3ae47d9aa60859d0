"""Each side of every version branch in lora_nb.hf.compat, forced whatever release is installed.

Colab's transformers 5.15 knows only ``gradient_checkpointing``; 5.23 and later take
``activation_checkpointing`` (and keep the old name as a deprecated alias). The branch is taken by
asking SFTConfig for its fields, so a test forces a side by answering for it."""

from __future__ import annotations

import json

import pytest

import lora_nb
from lora_nb.hf import compat

OLD = frozenset({"output_dir", "gradient_checkpointing", "gradient_checkpointing_kwargs"})  # transformers < 5.23
NEW = OLD | {"activation_checkpointing", "activation_checkpointing_kwargs"}  # 5.23 and later


@pytest.mark.parametrize("fields, expected", [(OLD, "gradient_checkpointing"), (NEW, "activation_checkpointing")])
def test_the_checkpointing_keyword_is_the_one_the_release_takes(fields, expected):
    keywords = compat.sft_keywords({"output_dir": "o", "activation_checkpointing": True,
                                    "activation_checkpointing_kwargs": {"use_reentrant": False}}, fields)
    assert keywords == {"output_dir": "o", expected: True, f"{expected}_kwargs": {"use_reentrant": False}}


def test_a_key_no_release_renamed_passes_unchanged():
    assert compat.sft_keywords({"weight_decay": 0.1, "max_length": 64}, OLD) == {"weight_decay": 0.1, "max_length": 64}


@pytest.mark.parametrize("side", ["gradient_checkpointing", "activation_checkpointing"],
                         ids=["transformers<5.23", "transformers>=5.23"])
def test_training_with_checkpointing_on_takes_either_keyword(side, llama, parity, in_tmp, monkeypatch):
    """A real run through each side: the installed transformers must turn checkpointing on from the
    keyword that side writes. A side the installed release cannot take at all (the new name on
    5.15) is covered by the mapping test above, and runs for real in the latest CI job."""
    real = compat.sft_config_fields()
    if side not in real:
        pytest.skip(f"the installed transformers has no {side} field: the other CI job runs this side")
    fields = (real - {"activation_checkpointing", "activation_checkpointing_kwargs"} if side == "gradient_checkpointing"
              else real)
    monkeypatch.setattr(compat, "sft_config_fields", lambda: fields)
    given = []
    monkeypatch.setattr(compat, "sft_keywords", lambda kwargs, f=None, keywords=compat.sft_keywords:
                        given.append(keywords(kwargs, f)) or given[-1])
    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, verbose=False)
    run = lora_nb.train(model, tok, parity[0], steps=1, batch_size=4, gradient_checkpointing=True, progress=False)
    assert given[-1][side] is True and len({"gradient_checkpointing", "activation_checkpointing"} & set(given[-1])) == 1
    assert json.loads((run.dir / "run.json").read_text())["gradient_checkpointing"] is True
    assert model.base_model.model.is_gradient_checkpointing


def test_the_tooltip_keyword_follows_ipywidgets_major_version():
    import ipywidgets

    from lora_nb.notebook.panel import widgets

    assert compat.tooltip_keyword("7.7.1") == "description_tooltip"
    assert compat.tooltip_keyword("8.1.9") == "tooltip"
    assert widgets.TOOLTIP == compat.tooltip_keyword(ipywidgets.__version__)
    control = ipywidgets.IntText(**widgets.field_tooltip(lora_nb.recipe.schema.LoraSection, "r"))
    assert "rank" in getattr(control, widgets.TOOLTIP).lower()
