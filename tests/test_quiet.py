"""Library noise is captured during lora_nb calls, written to the run's log.txt and counted, while
lora_nb's own warnings, a user's warnings and other threads' messages still show."""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import warnings

import pytest

import lora_nb
from lora_nb.core.errors import LoraNbWarning
from lora_nb.core.quiet import captured, quietly


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
    assert log.summary() == f"3 library messages in {tmp_path / 'log.txt'}"


def test_lora_nb_and_user_warnings_and_errors_still_show(capsys):
    with pytest.warns(UserWarning) as shown:  # what reaches the warnings machinery's display
        with captured() as log:
            warnings.warn("r=128 is not below the smallest adapted dimension", LoraNbWarning)
            warnings.warn_explicit("the user's own warning", UserWarning, "/tmp/ipykernel_1/123.py", 1, registry={})
            library_warning("library noise")
    assert [str(w.message) for w in shown] == ["the user's own warning"]
    # lora_nb's own: a note line on stdout, never a stderr box
    assert capsys.readouterr().out == "note: r=128 is not below the smallest adapted dimension\n"
    assert log.count == 1


def test_hooks_are_removed_after_the_call(caplog):
    before = warnings.showwarning, logging.Logger.callHandlers, sys.stderr
    with captured():
        assert sys.stderr is not before[2]
    assert (warnings.showwarning, logging.Logger.callHandlers, sys.stderr) == before
    logging.getLogger("peft").warning("after the call it shows")
    assert "after the call it shows" in caplog.text  # pytest's handler on the root logger got it


NOISY = '''
import logging, sys, warnings
print("noisy_lib: a message at import", file=sys.stderr)
warnings.warn("noisy_lib: a warning at import", RuntimeWarning)
logging.getLogger("noisy_lib.loader").warning("noisy_lib: a log line at import")

def act():
    print("noisy_lib: a message at call time", file=sys.stderr)
    sys.stderr.write("noisy_lib: 10%\\rnoisy_lib: 100%\\n")
    logging.getLogger("noisy_lib").info("noisy_lib: an info line (its logger says INFO)")
    logging.warning("noisy_lib: a root-logger line from the library's file")
    try:
        1 / 0
    except ZeroDivisionError:
        import traceback; traceback.print_exc()
'''


@pytest.fixture
def noisy_lib(tmp_path, monkeypatch):
    """A package no lora_nb release has heard of, installed as packages are (in a site-packages
    folder), that writes to stderr, warns and logs at import and when called."""
    site = tmp_path / "site-packages"
    (site / "noisy_lib").mkdir(parents=True)
    (site / "noisy_lib" / "__init__.py").write_text(NOISY)
    monkeypatch.syspath_prepend(str(site))
    logging.getLogger("noisy_lib").setLevel(logging.INFO)
    yield
    sys.modules.pop("noisy_lib", None)
    logging.getLogger("noisy_lib").setLevel(logging.NOTSET)


def test_an_unknown_librarys_stderr_warnings_and_logs_are_captured_at_import_and_call(noisy_lib, capsys, caplog):
    with pytest.warns(UserWarning) as shown:  # what reaches the warnings machinery's display
        with captured() as log:
            import noisy_lib

            noisy_lib.act()
            print("the user's own line", file=sys.stderr)
            warnings.warn_explicit("the user's own warning", UserWarning, "/tmp/ipykernel_1/123.py", 1, registry={})
    out = capsys.readouterr()
    assert "noisy_lib" not in out.err + caplog.text
    assert out.err == "the user's own line\n" and [str(w.message) for w in shown] == ["the user's own warning"]
    text = "\n".join(log.lines)
    for said in ("a message at import", "a warning at import", "a log line at import", "a message at call time",
                 "noisy_lib: 100%", "an info line", "a root-logger line", "ZeroDivisionError"):
        assert said in text, said
    assert "10%" not in text  # a line redrawn in place is kept in its last state
    noisy_lib.act()  # outside a lora_nb call the library speaks as it always did
    assert "a message at call time" in capsys.readouterr().err


def test_a_lora_nb_call_says_nothing_on_stderr_with_verbose_libraries(tmp_path, model_cache):
    """A real 4-bit load, injection, 2 training steps and a merge in a fresh process, with the
    libraries at their most talkative and the Hub offline (transformers then warns about kernels'
    publisher check): stderr stays empty, and the result line counts what was kept in log.txt."""
    import subprocess

    code = ("import lora_nb\n"
            "from lora_nb.demo import tasks\n"
            "from lora_nb.demo.tiny import tiny_model\n"
            "model, tok = lora_nb.load(str(tiny_model('llama')), quant='4bit')\n"
            "model = lora_nb.inject(model, r=4)\n"
            "lora_nb.train(model, tok, tasks.split(16, 2)[0], steps=2, batch_size=4, "
            f"output_dir={str(tmp_path / 'run')!r})\n"
            f"lora_nb.merge(model, {str(tmp_path / 'merged')!r})\n"
            f"recipe = lora_nb.Recipe.from_dict({{'model': {{'name': str(tiny_model('llama'))}}, "
            f"'data': {{'path': {str(tmp_path / 'data.jsonl')!r}}}}})\n"
            "lora_nb.to_script(recipe)\n")  # export reads the data (its format, its rows): quietly too
    (tmp_path / "data.jsonl").write_text('{"text": "hello"}\n')
    env = dict(os.environ, LORA_NB_CACHE=model_cache, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_VERBOSITY="info", DATASETS_VERBOSITY="info", TQDM_DISABLE="")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "library messages in" in done.stdout and (tmp_path / "run" / "log.txt").stat().st_size > 0


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


def test_the_stacks_import_time_notes_never_show_once_lora_nb_is_imported(noisy_lib, capsys, monkeypatch):
    """Whoever imports a library of the training stack after lora_nb (a notebook's own
    ``from peft import ...``), what it says at import goes to the log: bitsandbytes' CPU kernel
    hint, transformers 5.25's kernels-publisher note. Its modules still see their own loader."""
    import importlib.machinery

    from lora_nb.core import quiet

    monkeypatch.setattr(quiet, "LIBRARIES", (*quiet.LIBRARIES, "noisy_lib"))
    import noisy_lib

    assert capsys.readouterr().err == ""
    assert any("noisy_lib: a message at import" in line for line in open(quiet.default_log()))
    assert isinstance(noisy_lib.__loader__, importlib.machinery.SourceFileLoader)
    noisy_lib.act()  # at call time, outside a lora_nb call, the library speaks as it always did
    assert "a message at call time" in capsys.readouterr().err


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
    from lora_nb.core import progress

    lora_nb.load(llama)
    assert "Loading weights" not in capsys.readouterr().err
    assert progress.worth_a_bar("Qwen/Qwen2.5-0.5B-Instruct")  # a Hub name may download
    monkeypatch.setattr(progress, "SMALL_BYTES", 1)
    assert progress.worth_a_bar(llama)
    lora_nb.load(llama)
    assert "Loading weights" in capsys.readouterr().err


def test_building_a_tiny_model_shows_no_bar(tmp_path, monkeypatch, capsys):
    from lora_nb.demo.tiny import tiny_model

    monkeypatch.setenv("LORA_NB_CACHE", str(tmp_path))
    tiny_model("gpt2")
    assert "Writing model shards" not in capsys.readouterr().err


def test_a_terminal_shows_one_bar_for_the_run_and_a_log_file_none(tmp_path, model_cache):
    """lora_nb's own progress display: on a terminal (a pty here) one bar with the loss in it and no
    other bar (no nested evaluation bar, no library's); with stderr a file, nothing at all."""
    import fcntl
    import pty
    import struct
    import subprocess
    import termios

    code = ("import lora_nb\n"
            "from lora_nb.demo import tasks\n"
            "from lora_nb.demo.tiny import tiny_model\n"
            "model, tok = lora_nb.load(str(tiny_model('llama')))\n"
            "model = lora_nb.inject(model, r=4, verbose=False)\n"
            "rows = tasks.split(32, 8)\n"
            "lora_nb.train(model, tok, rows[0], eval=rows[1], eval_steps=3, steps=6, batch_size=4, "
            "output_dir=__import__('sys').argv[1])\n")
    env = dict(os.environ, LORA_NB_CACHE=model_cache, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "tty")], stdout=subprocess.DEVNULL,
                            stderr=follower, env=env)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(timeout=600) == 0
    os.close(leader)
    screen = seen.decode(errors="replace").replace("\r", "\n")
    assert "6/6 [" in screen and "loss=" in screen, screen
    assert set(re.findall(r"\|\s*\d+/(\d+) \[", screen)) == {"6"}, screen  # one bar: no evaluation's, no library's

    with open(tmp_path / "stderr.txt", "w") as log:
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "file")], stdout=subprocess.DEVNULL,
                              stderr=log, env=env, timeout=600)
    assert done.returncode == 0 and (tmp_path / "stderr.txt").read_text() == ""


def test_importing_lora_nbs_notebook_layer_says_nothing_on_stderr(model_cache):
    """The live chart's module imports transformers (and through it bitsandbytes, which with the Hub
    offline has transformers 5.25's kernels package warn): a lora_nb import keeps that out too."""
    import subprocess

    env = dict(os.environ, LORA_NB_CACHE=model_cache, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="info")
    done = subprocess.run([sys.executable, "-c", "import lora_nb\nfrom lora_nb.notebook.live import LiveChart\n"
                           "import bitsandbytes, peft, trl"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr
