"""Library noise is captured during lora_nb calls, written to the run's log.txt and counted, while
lora_nb's own warnings, a user's warnings and other threads' messages still show."""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from pathlib import Path

import pytest

import lora_nb
from lora_nb.errors import LoraNbWarning
from lora_nb.quiet import captured, quietly


def library_warning(message: str) -> None:
    """Raised as if from inside an installed package (what _from_library looks at). A UserWarning:
    pytest is set to ignore FutureWarnings."""
    warnings.warn_explicit(message, UserWarning, "/x/site-packages/transformers/modeling_utils.py", 3312,
                           registry={})


def test_library_warnings_and_logs_are_captured_not_shown(capsys, tmp_path):
    with captured() as log:
        library_warning("`is_gradient_checkpointing` is deprecated")
        logging.getLogger("transformers.trainer_utils").warning("mtime may not be reliable on this filesystem")
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning("some other bitsandbytes note")
        log.to(tmp_path / "log.txt")
    assert capsys.readouterr().err == ""
    assert log.count == 3
    text = (tmp_path / "log.txt").read_text()
    assert "is_gradient_checkpointing" in text and "mtime may not" in text and "bitsandbytes note" in text
    assert log.summary() == f"3 library warnings in {tmp_path / 'log.txt'}"


def test_lora_nb_and_user_warnings_and_errors_still_show():
    with pytest.warns(UserWarning) as shown:  # what reaches the warnings machinery's display
        with captured() as log:
            warnings.warn("r=128 is not below the smallest adapted dimension", LoraNbWarning)
            warnings.warn_explicit("the user's own warning", UserWarning, "/tmp/ipykernel_1/123.py", 1, registry={})
            library_warning("library noise")
    assert [str(w.message) for w in shown] == ["r=128 is not below the smallest adapted dimension",
                                               "the user's own warning"]
    assert log.count == 1


def test_hooks_are_removed_after_the_call(caplog):
    before = warnings.showwarning
    with captured():
        pass
    assert warnings.showwarning is before
    logger = logging.getLogger("peft")
    assert not any(type(h).__name__ == "_Router" for h in logger.handlers)
    logger.warning("after the call it shows")
    assert "after the call it shows" in caplog.text  # pytest's handler on the root logger got it


def test_another_threads_messages_are_not_swallowed(capsys):
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logger = logging.getLogger("accelerate")
    keep = Keep()
    logger.addHandler(keep)
    try:
        with captured() as log:
            thread = threading.Thread(target=lambda: logger.warning("from another thread"))
            thread.start()
            thread.join()
            logger.warning("from this thread")
    finally:
        logger.removeHandler(keep)
    assert seen == ["from another thread"]
    assert log.count == 1


def test_nested_calls_count_once_in_the_outer_capture():
    @quietly()
    def inner():
        logging.getLogger("trl").warning("inner noise")

    with captured() as outer:
        inner()
        inner()
    assert outer.count == 2


def test_a_background_thread_joins_its_runs_capture():
    with captured() as log:
        pass

    def work():
        with log.joined():
            logging.getLogger("datasets").warning("from the training thread")

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert log.count == 1


def test_the_bitsandbytes_kernel_hint_never_shows(caplog):
    import lora_nb  # noqa: F401 - importing lora_nb is enough, no call needed

    ops = logging.getLogger("bitsandbytes.backends.cpu.ops")
    ops.warning("Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'.")
    ops.warning("a different bitsandbytes warning")
    assert "gemm_4bit_forward" not in caplog.text and "a different bitsandbytes warning" in caplog.text


def test_datasets_and_transformers_bars_are_off_inside_and_back_after():
    import datasets.utils
    from transformers.utils import logging as tlog

    assert not datasets.utils.are_progress_bars_disabled() and tlog.is_progress_bar_enabled()
    with captured(progress=False):
        assert datasets.utils.are_progress_bars_disabled() and not tlog.is_progress_bar_enabled()
    with captured(progress=True):  # a load or a merge keeps transformers' bar as its one display
        assert datasets.utils.are_progress_bars_disabled() and tlog.is_progress_bar_enabled()
    assert not datasets.utils.are_progress_bars_disabled() and tlog.is_progress_bar_enabled()


def test_a_library_installed_outside_site_packages_is_still_a_library(tmp_path, monkeypatch):
    """pip install --target DIR with DIR on PYTHONPATH (as on a GPU box): no site-packages in the path."""
    import types

    trl = types.ModuleType("trl")
    trl.__file__ = str(tmp_path / "site" / "trl" / "__init__.py")
    monkeypatch.setitem(sys.modules, "trl", trl)
    with pytest.warns(UserWarning) as shown:
        with captured() as log:
            warnings.warn_explicit("from trl", UserWarning, str(tmp_path / "site" / "trl" / "trainer" / "sft.py"), 1,
                                   registry={})
            warnings.warn_explicit("the user's", UserWarning, str(tmp_path / "notebook.py"), 1, registry={})
    assert log.count == 1 and [str(w.message) for w in shown] == ["the user's"]


def test_a_small_model_loads_without_a_progress_bar(llama, capsys, monkeypatch):
    """A bar is for a load that takes a while: the tiny model's would be noise in every notebook cell."""
    from lora_nb import quiet

    lora_nb.load(llama)
    assert "Loading weights" not in capsys.readouterr().err
    assert quiet.worth_a_bar("Qwen/Qwen2.5-0.5B-Instruct")  # a Hub name may download
    monkeypatch.setattr(quiet, "SMALL_BYTES", 1)
    assert quiet.worth_a_bar(llama)
    lora_nb.load(llama)
    assert "Loading weights" in capsys.readouterr().err


def test_building_a_tiny_model_shows_no_bar(tmp_path, monkeypatch, capsys):
    from lora_nb.tiny import tiny_model

    monkeypatch.setenv("LORA_NB_CACHE", str(tmp_path))
    tiny_model("gpt2")
    assert "Writing model shards" not in capsys.readouterr().err
