"""``%lora`` and ``%%lora``: one small function per verb, each calling the session (and so the API).

Arguments follow IPython-magic habits: flags (``--4bit``), ``key=value`` for recipe fields
(values read as YAML scalars: ``r=8``, ``lr=2e-4``, ``targets=[q_proj, v_proj]``), and a name
from the notebook's namespace as a value (``data=my_dataset``). Bad input raises IPython's
``UsageError`` itself — the one type IPython shows without a traceback — naming the key, the value
and what is allowed.
"""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass
from typing import Any, Callable, Optional

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from ..errors import ConfigError, nearest
from ..files import check_free
from ..recipe import SECTIONS, DataSection, LoraSection, ModelSection, Recipe, TrainSection, parse_yaml
from .session import Session


@dataclass
class Verb:
    fn: Callable[..., Any]
    help: str
    example: str
    flags: Callable[[argparse.ArgumentParser], None] = lambda p: None
    free: str = ""  # "settings" (key=value words) or "prompt" (the rest of the line)


VERBS: dict[str, Verb] = {}


def verb(name: str, help: str, example: str, flags: Callable[[argparse.ArgumentParser], None] = lambda p: None,
         free: str = ""):
    """Register ``fn(magics, args, cell)`` as ``%lora name``."""
    def register(fn):
        VERBS[name] = Verb(fn, help, example, flags, free)
        return fn
    return register


class _Parser(argparse.ArgumentParser):
    """argparse whose errors become UsageError instead of exiting the kernel."""

    def error(self, message: str):
        raise UsageError(f"%lora {self.prog}: {message}. Usage: {self.format_usage().strip()[7:]}")

    def exit(self, status: int = 0, message: Optional[str] = None):
        raise UsageError(message or self.format_help())


@magics_class
class LoraMagics(Magics):
    """The ``%lora`` line magic and ``%%lora`` cell magic."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.session = Session()

    @line_cell_magic
    def lora(self, line: str = "", cell: Optional[str] = None):
        """LoRA/QLoRA fine-tuning. ``%lora help`` lists the verbs with an example each."""
        tokens = _split(line)
        name = tokens[0] if tokens else ("recipe" if cell is not None else "help")
        if name not in VERBS or name == "recipe" and cell is None:
            hint = nearest(name, VERBS)
            raise UsageError(f"%lora has no verb {name!r}. Verbs: {', '.join(v for v in VERBS if v != 'recipe')}."
                             + (f" Did you mean {hint!r}?" if hint else ""))
        spec = VERBS[name]
        parser = _Parser(prog=name, add_help=False)
        spec.flags(parser)
        if spec.free:
            parser.add_argument("settings", nargs="*", metavar="key=value" if spec.free == "settings" else "prompt")
        args = parser.parse_args(tokens[1:])
        try:
            return spec.fn(self, args, cell)
        except ConfigError as e:
            raise UsageError(str(e)) from None

    def settings(self, items: list[str], allowed: dict[str, str]) -> dict[str, Any]:
        """``key=value`` items as a dict; keys checked against ``allowed`` (key -> section for errors)."""
        out = {}
        for item in items:
            if "=" not in item:
                raise UsageError(f"%lora: expected key=value, got {item!r}")
            key, raw = item.split("=", 1)
            if key not in allowed:
                raise ConfigError(key, problem="unknown setting", allowed=allowed)
            out[key] = self.value(raw)
        return out

    def value(self, raw: str) -> Any:
        """A notebook variable by name, else the text read as a YAML scalar (8, 2e-4, true, [a, b])."""
        import yaml

        if raw.isidentifier() and raw in self.shell.user_ns:
            return self.shell.user_ns[raw]
        if NUMBER.fullmatch(raw):  # YAML 1.1 would keep 2e-4 as a string
            return float(raw) if any(c in raw for c in ".eE") else int(raw)
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError:
            return raw


NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as e:
        raise UsageError(f"%lora: cannot read the arguments ({e})") from None


def _fields(cls: type) -> dict[str, str]:
    import dataclasses

    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def _yaml(cell: str, what: str) -> dict:
    body = parse_yaml(cell, f"%%lora {what}: the cell") or {}  # refuses aliases: no "billion laughs" cell
    if not isinstance(body, dict):
        raise UsageError(f"%%lora {what}: the cell must hold key: value lines, got {type(body).__name__}")
    return body


# --- verbs, in pipeline order -------------------------------------------------------------------

def _load_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("model")
    bits = p.add_mutually_exclusive_group()
    bits.add_argument("--4bit", dest="quant", action="store_const", const="4bit")
    bits.add_argument("--8bit", dest="quant", action="store_const", const="8bit")
    p.add_argument("--dtype", default=ModelSection.dtype)
    p.add_argument("--device-map", default=None)
    p.add_argument("--trust-remote-code", action="store_true")


@verb("load", "load a model and tokenizer (4-bit = QLoRA)", "%lora load Qwen/Qwen2.5-0.5B-Instruct --4bit", _load_flags)
def _load(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    m.session.load(args.model, quant=args.quant, dtype=args.dtype, device_map=args.device_map,
                   trust_remote_code=args.trust_remote_code)
    print(f"loaded {args.model} ({args.quant or args.dtype}); next: %lora targets, %lora inject")


def _targets_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?")
    p.add_argument("--r", type=int, default=LoraSection.r)


@verb("targets", "modules by role with LoRA costs (a MODEL name reads only its config)", "%lora targets meta-llama/Llama-3.1-8B --r 16", _targets_flags)
def _targets(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    return m.session.targets(args.model, r=args.r)


@verb("inject", "add a LoRA adapter: r, alpha, dropout, targets, variant, ...", "%lora inject r=16 alpha=32 targets=attention", free="settings")
def _inject(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    settings = m.settings(args.settings, _fields(LoraSection))
    if cell is not None:
        settings = {**_section_body(cell, "inject", "lora"), **settings}
    m.session.inject(**settings)


TRAIN_KEYS = {**_fields(TrainSection), "data": _fields(DataSection)["path"],
              **{k: v for k, v in _fields(DataSection).items() if k != "path"},
              "output_dir": _fields(Recipe)["output_dir"]}


def _train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--background", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="replace the run in a taken output_dir")
    p.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue that run from its last checkpoint")


@verb("train", "train the adapter with a live chart (--background keeps the kernel free; --resume RUN_DIR continues a run)",
      "%lora train data=train.jsonl steps=200 lr=2e-4", _train_flags, "settings")
def _train(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    settings = m.settings(args.settings, TRAIN_KEYS)
    if cell is not None:
        body = _yaml(cell, "train")
        data = body.pop("data", None)
        if isinstance(data, dict):  # a data section: {path, format, eval, split}
            body.update({("data" if k == "path" else k): v for k, v in data.items()})
        elif data is not None:
            body["data"] = data
        flat = {**body.pop("train", {}), **body}
        unknown = [k for k in flat if k not in TRAIN_KEYS]
        if unknown:
            raise ConfigError(unknown[0], problem="unknown setting", allowed=TRAIN_KEYS)
        settings = {**flat, **settings}
    if "data" not in settings:
        raise UsageError("%lora train needs data=PATH (a file, a Hub dataset, or a notebook variable)")
    data = settings.pop("data")
    if args.resume:
        settings["resume"] = args.resume
    elif settings.get("output_dir"):  # checked here too, so the error names this magic's flags
        check_free(settings["output_dir"], "output_dir", overwrite=args.overwrite, option="--overwrite (or --resume DIR)")
    run = m.session.train(data, background=args.background, live=_in_kernel(m), overwrite=args.overwrite, **settings)
    return None if args.background else run


@verb("wait", "block until the background run ends", "%lora wait")
def _wait(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    return m.session.wait()


@verb("stop", "stop the background run after its current step (adapter kept)", "%lora stop")
def _stop(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    m.session.stop()
    print("stopping after the current step…")


def _prompt(args: argparse.Namespace, cell: Optional[str], what: str) -> str:
    if cell is not None:
        return cell.rstrip("\n")
    if not args.settings:
        raise UsageError(f'%lora {what} needs a prompt: %lora {what} "your prompt" (or a %%lora {what} cell)')
    return " ".join(args.settings)


def _gen_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=None, help="answer length (default: generate's)")


@verb("generate", "answer a prompt with the current model", '%lora generate "Is 7 even or odd?"', _gen_flags, "prompt")
def _generate(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    print(m.session.generate(_prompt(args, cell, "generate"), **_given(max_new_tokens=args.max_new_tokens)))


@verb("compare", "base vs adapter answers side by side", '%lora compare "Is 7 even or odd?"', _gen_flags, "prompt")
def _compare(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    return m.session.compare([_prompt(args, cell, "compare")], **_given(max_new_tokens=args.max_new_tokens))


def _dir_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir")
    p.add_argument("--force", action="store_true", help="write into a folder that is not empty")


@verb("save", "save the adapter (safetensors) and tokenizer", "%lora save my-adapter", _dir_flag)
def _save(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    check_free(args.dir, "dir", overwrite=args.force, option="--force")  # names this magic's flag, not the API's
    print(f"adapter saved in {m.session.save(args.dir, overwrite=args.force)}")


def _merge_flags(p: argparse.ArgumentParser) -> None:
    _dir_flag(p)
    p.add_argument("--into", default=None, help="dequantized (default: what QLoRA trained against) or original")
    p.add_argument("--dtype", default=None)


@verb("merge", "write a standalone merged model (QLoRA: into the dequantised weights)", "%lora merge merged-model", _merge_flags)
def _merge(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    check_free(args.dir, "dir", overwrite=args.force, option="--force")
    print(f"merged model written to {m.session.merge(args.dir, overwrite=args.force, **_given(into=args.into, dtype=args.dtype))}")


def _export_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?")
    p.add_argument("--cell", action="store_true", help="put the script into the next cell")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")


@verb("export", "the session as a standalone transformers/peft/trl script", "%lora export train_lora.py", _export_flags)
def _export(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    from IPython.display import Code

    script = m.session.export()
    if args.cell:
        m.shell.set_next_input(script, replace=False)
    if args.file:
        check_free(args.file, "FILE", overwrite=args.force, option="--force").write_text(script)
        print(f"wrote {args.file} — run it with: accelerate launch {args.file}")
    elif not args.cell:
        return Code(script, language="python")


@verb("runs", "past runs: settings, final metrics, loss curves overlaid", "%lora runs")
def _runs(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    return m.session.run_table()


@verb("panel", "the widget panel: model, targets, data preview, train / stop / compare / export", "%lora panel")
def _panel(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    from .panel import Panel

    return Panel(m.session)


@verb("help", "the verbs, with an example each", "%lora help")
def _help(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    print(help_text())


@verb("recipe", "a %%lora cell with a whole recipe (YAML) runs it end to end", "%%lora\nmodel: {name: ./m}\n...")
def _recipe(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    from ..recipe import Recipe

    return m.session.run_recipe(Recipe.from_dict(_yaml(cell or "", "recipe")), live=_in_kernel(m))


def _given(**flags: Any) -> dict:
    """The flags the user gave: the others are left to the API's own defaults (defined once, there)."""
    return {k: v for k, v in flags.items() if v is not None}


def _section_body(cell: str, what: str, section: str) -> dict:
    """A cell body given flat (``r: 8``) or as its section (``lora: {r: 8}``)."""
    body = _yaml(cell, what)
    return body[section] if set(body) == {section} else body


def _in_kernel(m: LoraMagics) -> bool:
    """True in a Jupyter kernel (display handles render); False in terminal IPython."""
    return getattr(m.shell, "kernel", None) is not None


def help_text() -> str:
    """The verbs with one-line descriptions and an example each."""
    width = max(len(v) for v in VERBS)
    lines = ["%lora VERB [args] — LoRA/QLoRA fine-tuning in the notebook", ""]
    for name, spec in VERBS.items():
        if name != "recipe":
            lines.append(f"  {name:<{width}}  {spec.help}\n  {'':<{width}}  e.g. {spec.example}")
    lines += ["", "%%lora [inject|train|generate|compare] with a YAML body (or the prompt, verbatim);",
              "a bare %%lora cell is a whole recipe: model, lora, data, train sections. Keys: " + ", ".join(SECTIONS)]
    return "\n".join(lines)
