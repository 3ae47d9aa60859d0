"""Every flag is what it says: a bool parameter, setting or option takes True/False only.

``trust_remote_code="false"`` is a non-empty string, which Python reads as true: before these
checks, ``lora_nb.load(folder, trust_remote_code="false")`` ran the folder's own model code.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import pkgutil
import subprocess
import sys

import pytest
from IPython.core.error import UsageError

import lora_nb
from lora_nb.core.errors import ConfigError, flag_kind

FALSY_SPELLINGS = ["false", "False", "0", "no", "off", "", "None", 0, 1, None, [], 0.0]


def _public_callables():
    """(where, function) for every public function and method of every lora_nb module."""
    for info in pkgutil.walk_packages(lora_nb.__path__, "lora_nb."):
        if info.name.startswith("lora_nb.hf."):
            continue  # plain HF code, shared with exported scripts: its callers in lora_nb check their flags first
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != info.name:
                continue
            if inspect.isfunction(obj):
                yield f"{info.name}.{name}", obj, False
            elif inspect.isclass(obj) and not dataclasses.is_dataclass(obj):
                for attr, member in vars(obj).items():
                    if inspect.isfunction(member) and (not attr.startswith("_") or attr == "__init__"):
                        yield f"{info.name}.{name}.{attr}", member, True
            elif inspect.isclass(obj):  # a dataclass: its own methods (its __init__ is checked by __post_init__)
                for attr, member in vars(obj).items():
                    if inspect.isfunction(member) and not attr.startswith("_"):
                        yield f"{info.name}.{name}.{attr}", member, True


def _flags(fn):
    return {name: flag_kind(p.annotation) for name, p in inspect.signature(fn).parameters.items()
            if flag_kind(p.annotation) is not None}


FLAGGED = [(where, fn, method, flag) for where, fn, method in _public_callables()
           for flag in _flags(fn) if where != "lora_nb.core.errors.check_flag"]


def test_the_scan_finds_the_flags_users_pass():
    names = {(where.rsplit(".", 1)[-1], flag) for where, _, _, flag in FLAGGED}
    assert {("load", "trust_remote_code"), ("train", "overwrite"), ("merge", "overwrite"), ("train", "packing"),
            ("estimate", "gradient_checkpointing"), ("sweep", "background"), ("load_adapter", "trainable")} <= names


@pytest.mark.parametrize("where, fn, method, flag", FLAGGED, ids=[f"{w}:{f}" for w, _, _, f in FLAGGED])
def test_every_public_flag_refuses_text_before_anything_runs(where, fn, method, flag):
    # nothing else is passed: the check comes first, so no model, folder or file is needed to reach it
    args = (object(),) if method else ()
    with pytest.raises(ConfigError, match=rf"^{flag}: must be True or False.*not text \(got 'false'\)"):
        fn(*args, **{flag: "false"})


@pytest.mark.parametrize("section, key", [("model", "trust_remote_code"), ("train", "packing"),
                                          ("train", "group_by_length"), ("train", "gradient_checkpointing")])
@pytest.mark.parametrize("value", ["false", "no", 0, [False]])
def test_recipe_flags_refuse_anything_but_a_bool(llama, section, key, value):
    raw = {"model": {"name": llama}, "data": {"path": "x.jsonl"}, section: {key: value}}
    if section == "model":
        raw["model"][key] = value
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: must be"):
        lora_nb.Recipe.from_dict(raw)
    section_class = {"model": lora_nb.recipe.schema.ModelSection, "train": lora_nb.recipe.schema.TrainSection}[section]
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: must be"):  # the dataclass built directly, too
        section_class(**({"name": llama} if section == "model" else {}), **{key: value})


# --- a folder whose remote code would leave a marker: it must never run unless asked with True ------

@pytest.fixture
def remote_code_folder(tmp_path, monkeypatch):
    """A model folder whose config names its own code (auto_map); importing that code writes ``marker``."""
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    folder, marker = tmp_path / "remote", tmp_path / "marker"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "lora_nb_remote", "architectures": ["RemoteModel"],
        "auto_map": {"AutoConfig": "configuration_remote.RemoteConfig",
                     "AutoModelForCausalLM": "configuration_remote.RemoteModel"}}))
    (folder / "configuration_remote.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import PretrainedConfig\n"
        "class RemoteConfig(PretrainedConfig):\n    model_type = 'lora_nb_remote'\n")
    return folder, marker


@pytest.mark.parametrize("spelling", FALSY_SPELLINGS + [False], ids=repr)
def test_remote_code_never_runs_unless_trust_is_true(remote_code_folder, spelling):
    folder, marker = remote_code_folder
    for call in (lambda: lora_nb.load(str(folder), trust_remote_code=spelling),
                 lambda: lora_nb.discover(str(folder), trust_remote_code=spelling),
                 lambda: lora_nb.estimate(str(folder), trust_remote_code=spelling),
                 lambda: lora_nb.suggest(str(folder), trust_remote_code=spelling)):
        with pytest.raises(ConfigError) as error:
            call()
        message = str(error.value)
        assert "\n" not in message
        if spelling is False:  # refused by transformers' own check, explained in one line
            assert message.startswith("model: ships its own model code") and "trust_remote_code=True" in message
        else:
            assert message.startswith("trust_remote_code: must be True or False")
    assert not marker.exists()


def test_the_marker_is_written_when_trust_is_true(remote_code_folder):
    # the control: the folder really does run its code when asked, so the test above can fail
    folder, marker = remote_code_folder
    with pytest.raises(Exception):
        lora_nb.load(str(folder), trust_remote_code=True)  # its AutoModel class does not exist
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("line", ['load {folder} trust_remote_code=false', 'load {folder} --trust-remote-code false',
                                  'load {folder} --trust-remote-code=false', 'targets {folder} --trust-remote-code no'])
def test_magic_refuses_a_valued_flag(shell, remote_code_folder, line):
    folder, marker = remote_code_folder
    shell.run_line_magic("load_ext", "lora_nb")
    with pytest.raises(UsageError):
        shell.run_line_magic("lora", line.format(folder=folder))
    assert not marker.exists()


def test_cli_refuses_a_valued_flag(remote_code_folder):
    folder, marker = remote_code_folder
    done = subprocess.run([sys.executable, "-m", "lora_nb.cli", "targets", str(folder), "--trust-remote-code=false"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, "-m", "lora_nb.cli", "targets", str(folder)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "ships its own model code" in done.stderr and "Traceback" not in done.stderr
    assert not marker.exists()


def test_a_recipe_with_text_for_trust_is_refused_before_loading(remote_code_folder, tmp_path):
    folder, marker = remote_code_folder
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model:\n  name: {folder}\n  trust_remote_code: 'false'\ndata:\n  path: d.jsonl\n")
    with pytest.raises(ConfigError, match="model.trust_remote_code: must be True or False"):
        lora_nb.run(lora_nb.Recipe.from_yaml(recipe))
    assert not marker.exists()
