"""``%lora`` and ``%%lora``: one small function per verb, each calling the session (and so the API).

Arguments follow IPython-magic habits: flags (``--4bit``), ``key=value`` for recipe fields
(values read as YAML scalars: ``r=8``, ``lr=2e-4``, ``targets=[q_proj, v_proj]``), and a name
from the notebook's namespace as a value (``data=my_dataset``). Bad input raises IPython's
``UsageError`` itself — the one type IPython shows without a traceback — naming the key, the value
and what is allowed.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from ..core.errors import ConfigError, nearest
from ..core.files import check_free, expand_user
from ..core.quiet import captured
from ..recipe.names import to_settings
from ..recipe.schema import SECTIONS, DataSection, LoraSection, ModelSection, Recipe, TrainSection, parse_yaml
from .session import Session


@dataclass
class Verb:
    fn: Callable[..., Any]
    help: str
    example: str
    flags: Callable[[argparse.ArgumentParser], None] = lambda p: None
    free: str = ""  # "settings" (key=value words) or "prompt" (the rest of the line)
    keys: dict[str, dataclasses.Field] = field(default_factory=dict)  # the key=value settings, as Recipe fields


VERBS: dict[str, Verb] = {}


def verb(name: str, help: str, example: str, flags: Callable[[argparse.ArgumentParser], None] = lambda p: None,
         free: str = "", keys: Optional[dict[str, dataclasses.Field]] = None):
    """Register ``fn(magics, args, cell)`` as ``%lora name``."""
    def register(fn):
        VERBS[name] = Verb(fn, help, example, flags, free, keys or {})
        return fn
    return register


class _Parser(argparse.ArgumentParser):
    """argparse whose errors become UsageError instead of exiting the kernel."""

    # prog is "lora train", without the "%": parse_intermixed_args stores the formatted usage back as a
    # %-template, where "%lora" would read as a format directive. The "%" is put back when shown.
    def error(self, message: str):
        raise UsageError(f"%{self.prog}: {message}. Usage: %{self.format_usage().strip()[7:]}")

    def exit(self, status: int = 0, message: Optional[str] = None):
        raise UsageError(message or self.format_help())

    def format_help(self) -> str:
        return super().format_help().replace(f"usage: {self.prog}", f"usage: %{self.prog}", 1)


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
        spec = _verb(name, cell_given=cell is not None)
        if {"-h", "--help"} & set(tokens[1:]):
            print(verb_help(name))
            return None
        args = _parser(name).parse_intermixed_args(tokens[1:])  # flags before, between or after key=value
        try:
            with captured(progress=True) as log:  # library noise logged and counted; each API call hides its own bars
                result = spec.fn(self, args, cell)
        except ConfigError as e:
            raise UsageError(str(e)) from None
        if log.count:
            print(f"({log.summary()})")
        return result

    def settings(self, items: list[str], allowed: dict[str, Any]) -> dict[str, Any]:
        """``key=value`` items as a dict; keys checked against ``allowed`` (the verb's settings)."""
        out = {}
        for item in items:
            if "=" not in item:
                raise UsageError(f"%lora: expected key=value, got {item!r}")
            key, raw = item.split("=", 1)
            if key in out:
                raise ConfigError(key, problem=f"given twice ({key}={out[key]!r} and {item}): keep one")
            out[key] = self.value(raw)
        return to_settings(out, allowed, problem="unknown setting")  # lora_alpha=64 is alpha=64: recipe.names

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


def _verb(name: str, cell_given: bool = True) -> Verb:
    """The verb called ``name``; a UsageError naming the verbs (and the nearest) for any other name."""
    if name not in VERBS or name == "recipe" and not cell_given:
        hint = nearest(name, VERBS)
        raise UsageError(f"%lora has no verb {name!r}. Verbs: {', '.join(v for v in VERBS if v != 'recipe')}."
                         + (f" Did you mean {hint!r}?" if hint else ""))
    return VERBS[name]


def _parser(name: str) -> _Parser:
    """The argument parser of verb ``name``: its flags, then its key=value settings or prompt."""
    spec = VERBS[name]
    parser = _Parser(prog=f"lora {name}", add_help=False)
    spec.flags(parser)
    if spec.free == "settings":
        parser.add_argument("settings", nargs="*", metavar="key=value", help="settings, listed below")
    elif spec.free == "prompt":
        parser.add_argument("settings", nargs="*", metavar="prompt", help="the prompt (quoted), or a %%%%lora cell's body")
    return parser


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as e:
        raise UsageError(f"%lora: cannot read the arguments ({e})") from None


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _field_help(cls: type, name: str) -> str:
    """A Recipe field's help text, for an argparse flag (its % escaped)."""
    return _fields(cls)[name].metadata["help"].replace("%", "%%")


def _yaml(cell: str, what: str) -> dict:
    body = parse_yaml(cell, f"%%lora {what}: the cell") or {}  # refuses aliases: no "billion laughs" cell
    if not isinstance(body, dict):
        raise UsageError(f"%%lora {what}: the cell must hold key: value lines, got {type(body).__name__}")
    return body


# --- verbs, in pipeline order -------------------------------------------------------------------

def _load_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=_field_help(ModelSection, "name") + " ~ and $VARS are expanded.")
    bits = p.add_mutually_exclusive_group()
    bits.add_argument("--4bit", dest="quant", action="store_const", const="4bit", help="QLoRA: NF4 weights, double quantisation")
    bits.add_argument("--8bit", dest="quant", action="store_const", const="8bit", help="LLM.int8 weights")
    p.add_argument("--dtype", default=ModelSection.dtype, help=_field_help(ModelSection, "dtype") + " (default: %(default)s)")
    p.add_argument("--device-map", default=None, help=_field_help(ModelSection, "device_map"))
    p.add_argument("--trust-remote-code", action="store_true", help=_field_help(ModelSection, "trust_remote_code"))


@verb("load", "load a model and tokenizer (4-bit = QLoRA)", "%lora load Qwen/Qwen2.5-0.5B-Instruct --4bit", _load_flags)
def _load(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    m.session.load(args.model, quant=args.quant, dtype=args.dtype, device_map=args.device_map,
                   trust_remote_code=args.trust_remote_code)
    print(f"loaded {args.model} ({args.quant or args.dtype}); next: %lora targets, %lora inject")


def _targets_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="a Hub name or folder (only its config is read); default: the loaded model")
    p.add_argument("--r", type=int, default=LoraSection.r, help=_field_help(LoraSection, "r") + " (default: %(default)s)")


@verb("targets", "modules by role with LoRA costs (a MODEL name reads only its config)", "%lora targets meta-llama/Llama-3.1-8B --r 16", _targets_flags)
def _targets(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    return m.session.targets(args.model, r=args.r)


LORA_KEYS = _fields(LoraSection)


@verb("inject", "add a LoRA adapter: r, alpha, dropout, targets, variant, ...", "%lora inject r=16 alpha=32 targets=attention",
      free="settings", keys=LORA_KEYS)
def _inject(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    settings = m.settings(args.settings, LORA_KEYS)
    if cell is not None:
        body = to_settings(_section_body(cell, "inject", "lora"), LORA_KEYS, problem="unknown setting")
        settings = {**body, **settings}
    m.session.inject(**settings)


TRAIN_KEYS = {**_fields(TrainSection), "data": _fields(DataSection)["path"],
              **{k: v for k, v in _fields(DataSection).items() if k != "path"},
              "output_dir": _fields(Recipe)["output_dir"]}
PATH_KEYS = ("data", "eval", "output_dir", "resume")  # expanded here, so the run's recipe holds the real path


def _train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--background", action="store_true", help="train in a thread: the kernel stays free, Stop works")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--fresh", action="store_true", help="put a fresh adapter (the last inject's settings, else the "
                       "defaults) on the base first; without it training continues the current adapter")
    start.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue that run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run in a taken output_dir")


@verb("train", "train the current adapter further with a live chart (--fresh: a new adapter; --background; --resume RUN_DIR)",
      "%lora train data=train.jsonl steps=200 lr=2e-4", _train_flags, "settings", TRAIN_KEYS)
def _train(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    settings = m.settings(args.settings, TRAIN_KEYS)
    if cell is not None:
        body = _yaml(cell, "train")
        data = body.pop("data", None)
        if isinstance(data, dict):  # a data section: {path, format, eval, split}
            body.update({("data" if k == "path" else k): v for k, v in data.items()})
        elif data is not None:
            body["data"] = data
        flat = to_settings({**body.pop("train", {}), **body}, TRAIN_KEYS, problem="unknown setting")
        settings = {**flat, **settings}
    if "data" not in settings:
        raise UsageError("%lora train needs data=PATH (a file, a Hub dataset, or a notebook variable)")
    if args.resume:
        settings["resume"] = args.resume
    for key in PATH_KEYS:
        if isinstance(settings.get(key), str):
            settings[key] = expand_user(settings[key])
    data = settings.pop("data")
    if settings.get("output_dir") and not settings.get("resume"):  # checked here too, so the error names this magic's flags
        check_free(settings["output_dir"], "output_dir", overwrite=args.overwrite, option="--overwrite (or --resume DIR)")
    run = m.session.train(data, fresh=args.fresh, background=args.background, live=_in_kernel(m),
                          overwrite=args.overwrite, **settings)
    return _shown(m, run, args.background)


SWEEP_OPTIONS = {
    "seeds": dataclasses.field(default=1, metadata={"help": "runs per point with train.seed, +1, …: the table gives mean ± spread"}),
    "eval_data": dataclasses.field(default=None, metadata={"help": "held-out rows scored after each point (see %lora eval)"}),
    "metric": dataclasses.field(default="exact_match", metadata={"help": "the eval score: exact_match, contains, token_accuracy, or a notebook function"}),
    "output_dir": dataclasses.field(default=None, metadata={"help": "the sweep's folder, new or empty (default runs/sweep-<date-time>)"}),
}
SWEEP_KEYS = {**{k: f for k, f in LORA_KEYS.items() if k != "seed"}, **{k: f for k, f in TRAIN_KEYS.items() if k != "resume"},
              **SWEEP_OPTIONS}


def _sweep_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--background", action="store_true", help="sweep in a thread: the kernel stays free, Stop works")


@verb("sweep", "train one fresh adapter per combination of settings on the loaded base: one chart, one table, best row marked",
      "%lora sweep r=4,8,16 targets=attention,all-linear steps=50 eval_data=test.jsonl", _sweep_flags, "settings", SWEEP_KEYS)
def _sweep(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    grid = {}
    for item in args.settings:
        if "=" not in item:
            raise UsageError(f"%lora sweep: expected key=v1,v2,…, got {item!r}")
        key, raw = item.split("=", 1)
        if key not in SWEEP_KEYS:
            raise ConfigError(key, problem="unknown setting", allowed=SWEEP_KEYS)
        values = [m.value(part) for part in _top_level_commas(raw)]
        if len(values) == 1:  # one value for every point; a list (targets=[q_proj,v_proj]) is one value too
            values = values[0] if key in SWEEP_OPTIONS or key == "data" or not isinstance(values[0], list) else values
        grid[key] = values
    for key in ("data", "eval_data", "output_dir"):
        if isinstance(grid.get(key), str):
            grid[key] = expand_user(grid[key])
    result = m.session.sweep(live=_in_kernel(m), background=args.background, **grid)
    return None if args.background or _in_kernel(m) else result


def _top_level_commas(raw: str) -> list[str]:
    """``4,8,16`` → three values; commas inside brackets stay (``[q_proj,v_proj],attention`` is two)."""
    parts, depth, current = [], 0, ""
    for ch in raw:
        depth += ch in "[{(" and 1 or 0
        depth -= ch in "]})" and 1 or 0
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return parts + [current]


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


EVAL_HELP = {
    "data": "held-out rows with reference answers: a file, a Hub dataset or a notebook variable, in any format training reads",
    "metric": "exact_match, contains, token_accuracy, or a notebook function (prediction, reference) -> score",
    "limit": "score only the first N rows",
    "max_new_tokens": "answer length (default: the longest reference's tokens + 8)",
    "batch_size": "rows answered at once",
}


def _eval_keys() -> dict[str, dataclasses.Field]:
    """evaluate()'s keywords as fields (default from its signature, help above): one definition."""
    import inspect

    from ..inference.evaluation import evaluate

    params = inspect.signature(evaluate).parameters
    return {key: dataclasses.field(default="" if key == "data" else params[key].default, metadata={"help": text})
            for key, text in EVAL_HELP.items()}


EVAL_KEYS = _eval_keys()


@verb("eval", "score the model on held-out rows (the score is kept with the run that trained the adapter)",
      "%lora eval data=test.jsonl metric=exact_match limit=100", free="settings", keys=EVAL_KEYS)
def _eval(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    settings = m.settings(args.settings, EVAL_KEYS)
    if "data" not in settings:
        raise UsageError("%lora eval needs data=PATH (held-out rows with answers: a file, a Hub dataset, or a notebook variable)")
    return m.session.evaluate(settings.pop("data"), **settings)


@verb("compare", "base vs adapter answers side by side", '%lora compare "Is 7 even or odd?"', _gen_flags, "prompt")
def _compare(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    return m.session.compare([_prompt(args, cell, "compare")], **_given(max_new_tokens=args.max_new_tokens))


def _dir_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="the folder to write: new or empty (~ and $VARS are expanded)")
    p.add_argument("--force", action="store_true", help="write into a folder that is not empty")


@verb("save", "save the adapter (safetensors) and tokenizer", "%lora save my-adapter", _dir_flag)
def _save(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    check_free(args.dir, "dir", overwrite=args.force, option="--force")  # names this magic's flag, not the API's
    print(f"adapter saved in {m.session.save(args.dir, overwrite=args.force)}")


def _merge_flags(p: argparse.ArgumentParser) -> None:
    _dir_flag(p)
    p.add_argument("--into", default=None, help="dequantized (default: what QLoRA trained against) or original")
    p.add_argument("--dtype", default=None, help="bf16, fp16 or fp32 (default: the dtype the adapter computed in)")


@verb("merge", "write a standalone merged model (QLoRA: into the dequantised weights)", "%lora merge merged-model", _merge_flags)
def _merge(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    check_free(args.dir, "dir", overwrite=args.force, option="--force")
    print(f"merged model written to {m.session.merge(args.dir, overwrite=args.force, **_given(into=args.into, dtype=args.dtype))}")


def _export_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", help="the script to write (~ and $VARS are expanded); none: show it")
    p.add_argument("--cell", action="store_true", help="put the script into the next cell")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")


@verb("export", "the session as a standalone transformers/peft/trl script", "%lora export train_lora.py", _export_flags)
def _export(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    from IPython.display import Code

    script = m.session.export()
    if args.cell:
        m.shell.set_next_input(script, replace=False)
    if args.file:
        path = check_free(args.file, "FILE", overwrite=args.force, option="--force")
        path.write_text(script)
        print(f"wrote {path} — run it with: accelerate launch {path}")
    elif not args.cell:
        return Code(script, language="python")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return int(text)


def _runs_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default="runs", help="the folder holding run folders (default: %(default)s)")
    p.add_argument("--limit", type=_positive, default=20, help="show the newest N (default: %(default)s)")
    p.add_argument("--filter", default=None, metavar="TEXT", help="key=value terms (r=16 status=finished lr=2e-4) "
                   "and/or text in the run's name or label; all must match")


@verb("runs", "past runs, newest first: this kernel's and every run folder on disk (other kernels, the CLI)",
      '%lora runs --filter "r=16 status=finished" --limit 5', _runs_flags)
def _runs(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    from ..runs.record import RunTable

    runs = m.session.find_runs(args.dir, filter=args.filter)
    if len(runs) > args.limit:
        print(f"the newest {args.limit} of {len(runs)} runs (--limit N shows more, --filter TEXT picks)")
    return RunTable(runs[:args.limit])


@verb("doctor", "library versions against the tested matrix, device, dtype auto picks, 4-bit path, caches, offline",
      "%lora doctor")
def _doctor(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    from ..core.doctor import doctor

    return doctor()


@verb("panel", "the widget panel: model, targets, data preview, train / stop / compare / export", "%lora panel")
def _panel(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    from .panel import Panel

    return Panel(m.session)


def _help_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("verb", nargs="?", help="a verb: its flags, its settings with their defaults, an example")


@verb("help", "the verbs, with an example each; %lora help VERB: its flags and settings", "%lora help train", _help_flags)
def _help(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    print(verb_help(args.verb) if args.verb else help_text())


RECIPE_KEYS = {f"{section}.{f.name}": f for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
RECIPE_KEYS["output_dir"] = _fields(Recipe)["output_dir"]


@verb("recipe", "a %%lora cell with a whole recipe (YAML) runs it end to end, always with a fresh adapter",
      "%%lora\nmodel: {name: ./m}\nlora: {r: 16, targets: attention}\ndata: {path: train.jsonl}\ntrain: {steps: 200}",
      keys=RECIPE_KEYS)
def _recipe(m: LoraMagics, args: argparse.Namespace, cell: Optional[str]):
    return _shown(m, m.session.run_recipe(Recipe.from_dict(_yaml(cell or "", "recipe")), live=_in_kernel(m)), False)


def _shown(m: LoraMagics, run: Any, background: bool) -> Any:
    """The Run as the cell's value only where nothing showed it yet: in a kernel the live chart and
    the result line already did (one chart, one line per train cell); a background run shows its
    own. In terminal IPython (no live chart) it is the cell's value, printed as its table."""
    return None if background or _in_kernel(m) else run


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
              "a bare %%lora cell is a whole recipe: model, lora, data, train sections. Keys: " + ", ".join(SECTIONS),
              "%lora help VERB (or %lora VERB --help): the verb's flags and every setting with its default."]
    return "\n".join(lines)


def verb_help(name: str) -> str:
    """One verb in full: its usage and flags, every ``key=value`` setting it takes with its default
    and help (the Recipe's field definitions), and an example.

    Example:
        >>> print(verb_help("stop"))
        %lora stop — stop the background run after its current step (adapter kept)
        <BLANKLINE>
        usage: %lora stop
        <BLANKLINE>
        example: %lora stop
    """
    spec = _verb(name)
    parts = [f"%lora {name} — {spec.help}", _parser(name).format_help().strip()]
    if name == "recipe":
        parts[1] = "usage: a %%lora cell (no arguments) holding YAML sections: model, lora, data, train, output_dir"
    if spec.keys:
        width = max(len(k) for k in spec.keys)
        rows = [(key, _default(f), f.metadata.get("help", "") + _choices(f)) for key, f in spec.keys.items()]
        shown = max(len(d) for _, d, _ in rows)
        lines = ["settings (key=value; a value is read as YAML, or is the notebook variable of that name):"
                 if spec.free == "settings" else "keys (section.key in the cell's YAML):"]
        for key, default, text in rows:
            lead = f"  {key:<{width}}  {default:<{shown}}  "
            lines.append(textwrap.fill(text, width=max(100, len(lead) + 40), initial_indent=lead,
                                       subsequent_indent=" " * len(lead)))
        parts.append("\n".join(lines))
    parts.append("example: " + spec.example.replace("\n", "\n         "))
    return "\n\n".join(parts)


def _default(f: dataclasses.Field) -> str:
    """A field's default written as a user types it: null, true, 0.0002, cosine, {}."""
    import yaml

    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if value == "":  # a model name or data path: there is no default
        return "required"
    if isinstance(value, float):
        return f"{value:g}"
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _choices(f: dataclasses.Field) -> str:
    choices = f.metadata.get("choices")
    return f" One of: {', '.join(map(str, choices))}." if choices else ""
