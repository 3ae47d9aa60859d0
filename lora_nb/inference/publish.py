"""Push a run's adapter (or its merged model) to the Hugging Face Hub with a model card.

The card says what a reader of the repo needs to reproduce or trust it: the base model and how it
was loaded (quantisation, dtype), the recipe as YAML, the data and its row counts, the loss chart,
the final train and eval loss, every score ``lora_nb.evaluate`` recorded, the versions, and a
usage snippet. ``dry_run=True`` builds the folder and card without any network call. Cost: a
copy of the adapter files (small); ``merged=True`` reloads the base and writes a full model.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from ..core.errors import ConfigError, first_line, strict_flags
from ..core.quiet import quietly
from ..core.version import __version__
from ..runs.adapters import adapter_meta, save
from ..runs.busy import check_not_training, check_run_not_training
from ..runs.history import read_jsonl
from ..runs.record import Run
from .merging import merge

TAGS = ["lora", "sft", "lora_nb", "trl"]
NO_TOKEN = "no Hugging Face token; run huggingface-cli login (or hf auth login) or set HF_TOKEN"
HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


@dataclass
class Pushed:
    """What :func:`push` built (and uploaded): the folder, its card's text, its files, the repo and
    its URL (None for a dry run)."""

    folder: Path
    card: str
    files: list[str] = field(default_factory=list)
    repo_id: str = ""
    url: Optional[str] = None

    def __str__(self) -> str:
        if self.url is None:
            return f"dry run: {len(self.files)} files for {self.repo_id} in {self.folder} (nothing uploaded)"
        return f"pushed {len(self.files)} files to {self.url}"


@strict_flags
@quietly()
def push(run_or_model: Any, repo_id: str, *, merged: bool = False, private: bool = True, dry_run: bool = False,
         token: Optional[str] = None, tokenizer: Any = None) -> Pushed:
    """Upload a run's adapter (``merged=True``: the merged model) to the Hub repo ``repo_id`` with a model card.

    ``run_or_model``: a :class:`~lora_nb.Run`, a run folder, or a PeftModel (its adapter is saved
    with ``tokenizer``; the card then has what lora_nb knows of how it was made). The repo is made
    private unless ``private=False``. The token is ``token``, else huggingface_hub's (``HF_TOKEN``
    or ``hf auth login``); without one, one line says so before anything is built. ``dry_run=True``
    builds the folder and card and stops there, with no network call: read ``.folder`` and ``.card``.

    Example:
        >>> result = push("runs/20261128-101500", "me/parity-lora", dry_run=True)  # doctest: +SKIP
        >>> result.files                                                            # doctest: +SKIP
        ['README.md', 'adapter_config.json', 'adapter_model.safetensors', 'loss.png', ...]
    """
    if not isinstance(repo_id, str) or not HUB_ID.match(repo_id):
        raise ConfigError("repo_id", repo_id, problem="is not a Hub repo id; give 'user/name'")
    if hasattr(run_or_model, "peft_config"):  # what is training would be saved, or merged, mid-step
        check_not_training(run_or_model, "pushing", key="run_or_model")
    elif isinstance(run_or_model, (Run, str, Path)):
        check_run_not_training(run_or_model, "pushing", key="run_or_model")
    if not dry_run:
        from huggingface_hub import get_token

        token = token or get_token()
        if not token:
            raise ConfigError("push", problem=NO_TOKEN)
    run, adapter, temp = _source(run_or_model, tokenizer)
    folder = Path(tempfile.mkdtemp(prefix="lora_nb-push-"))
    try:
        meta = adapter_meta(adapter, key="run_or_model")
        if merged:
            merge(adapter, folder, overwrite=True)
        else:
            for name in adapter_files(adapter):
                shutil.copyfile(adapter / name, folder / name)
        chart = _chart(run, folder)
        card = model_card(run, meta, repo_id, merged=merged, chart=chart)
        card.save(folder / "README.md")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    result = Pushed(folder, (folder / "README.md").read_text(), files, repo_id)
    if dry_run:
        return result
    try:
        result.url = _upload(folder, repo_id, private=private, token=token)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def _source(run_or_model: Any, tokenizer: Any) -> tuple[Optional[Run], Path, Optional[Path]]:
    """The run (if any), the adapter folder to publish, and a temporary folder to remove afterwards."""
    if isinstance(run_or_model, Run):
        return run_or_model, run_or_model.adapter_dir, None
    if isinstance(run_or_model, (str, Path)):
        folder = Path(run_or_model).expanduser()
        if (folder / "adapter").is_dir():
            return Run.load(folder), folder / "adapter", None
        return None, folder, None  # an adapter folder itself; adapter_meta names what is missing
    if hasattr(run_or_model, "peft_config"):
        temp = Path(tempfile.mkdtemp(prefix="lora_nb-adapter-"))
        return None, save(run_or_model, temp / "adapter", tokenizer=tokenizer), temp
    raise ConfigError("run_or_model", type(run_or_model).__name__,
                      problem="give a Run, a run folder, an adapter folder or a PeftModel")


def _chart(run: Optional[Run], folder: Path) -> Optional[str]:
    """Copy the run's chart (the live view's dashboard.png, else loss.png; drawn if neither) into ``folder``."""
    if run is None:
        return None
    for name in ("dashboard.png", "loss.png"):
        if (run.dir / name).is_file():
            shutil.copyfile(run.dir / name, folder / "loss.png")
            return "loss.png"
    if not run.history:
        return None
    from ..core.charts import save_png

    save_png(run.figure(), folder / "loss.png")
    return "loss.png"


@strict_flags
def model_card(run: Optional[Run], meta: dict, repo_id: str, *, merged: bool = False, chart: Optional[str] = None):
    """The README.md of a pushed adapter or merged model, as huggingface_hub's ``ModelCard``.

    ``meta``: how the base was loaded (:func:`lora_nb.runs.adapters.adapter_meta`). A base given as
    a local folder is named in the text but not in the metadata (the Hub takes only repo ids there).

    Example:
        >>> model_card(Run.load("runs/x"), adapter_meta("runs/x/adapter"), "me/x").data.library_name  # doctest: +SKIP
        'peft'
    """
    from huggingface_hub import ModelCard, ModelCardData

    base = str(meta["base"])
    on_hub = HUB_ID.match(base) is not None and not Path(base).expanduser().exists()
    data = ModelCardData(library_name="transformers" if merged else "peft", base_model=base if on_hub else None,
                         tags=TAGS + (["merged"] if merged else []), pipeline_tag="text-generation")
    recipe = run.recipe if run is not None else None
    what = "a merged model (the LoRA update added into the base weights)" if merged else "a LoRA adapter"
    lines = [f"# {repo_id.split('/')[-1]}", "",
             f"{what[0].upper()}{what[1:]} for `{base}`, fine-tuned with supervised fine-tuning (TRL's SFTTrainer) "
             f"by [lora_nb](https://pypi.org/project/lora-nb/) {__version__}.", "",
             "## Base model", "", f"- model: `{base}`" + ("" if on_hub else " (a local folder)"),
             f"- loaded with: quantisation `{meta.get('quant') or 'none'}`, dtype `{meta.get('dtype') or 'auto'}`"]
    lora = meta.get("lora") or {}
    if lora:
        lines.append(f"- LoRA: r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')}, "
                     f"targets `{lora.get('targets')}`")
    if run is not None:
        lines += ["", *_results(run, chart)]
    if recipe is not None:
        lines += ["", "## Recipe", "", "```yaml", recipe.to_yaml().rstrip(), "```"]
    lines += ["", "## Usage", "", "```python", *_usage(base, repo_id, merged), "```", "",
              "## Framework versions", "", *_versions()]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def _results(run: Run, chart: Optional[str]) -> list[str]:
    """The card's data and results sections: rows, losses, evaluations, the chart."""
    data = run.recipe.data if run.recipe is not None else None
    rows = run.rows or {}
    lines = ["## Training data", ""]
    if data is not None:
        lines.append(f"- train: `{data.path}` (split `{data.split}`), {_count(rows.get('train'))}")
        lines.append(f"- eval: `{data.eval}`, {_count(rows.get('eval'))}" if data.eval is not None else "- eval: none")
    lines += ["", "## Results", "", f"- steps: {run.step} of {run.max_steps} ({run.status})"]
    for key, name in (("loss", "final train loss"), ("eval_loss", "final eval loss")):
        value = run.last(key)
        lines.append(f"- {name}: {value:.4f}" if value is not None else f"- {name}: not logged")
    evals = read_jsonl(run.dir / "evals.jsonl")
    if evals:
        lines += ["", "| metric | score | examples | data |", "|---|---|---|---|"]
        lines += [f"| {e.get('metric')} | {e.get('score'):.4f} | {e.get('n')} | {e.get('data')} |" for e in evals
                  if isinstance(e.get("score"), (int, float))]
    if chart:
        lines += ["", f"![training and eval loss]({chart})"]
    return lines


def _count(n: Optional[int]) -> str:
    return f"{n:,} rows" if isinstance(n, int) else "rows not recorded"


def _usage(base: str, repo_id: str, merged: bool) -> list[str]:
    if merged:
        return ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
                f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")', *_generate()]
    return ["from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
            f'model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base}"), "{repo_id}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")', *_generate()]


def _generate() -> list[str]:
    return ['messages = [{"role": "user", "content": "Hello!"}]',
            "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", "
            "return_dict=True)",
            "output = model.generate(**inputs, max_new_tokens=64)",
            'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))']


def _versions() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    lines = [f"- lora_nb {__version__}"]
    for name in ("transformers", "peft", "trl", "torch"):
        try:
            lines.append(f"- {name} {version(name)}")
        except PackageNotFoundError:
            pass
    return lines


def _upload(folder: Path, repo_id: str, *, private: bool, token: str) -> str:
    """Create the repo (kept if it exists) and upload ``folder``; a failed connection is one line."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    unreachable: tuple = (OfflineModeIsEnabled, OSError)  # requests' errors (huggingface_hub < 1) are OSErrors
    try:
        import httpx  # huggingface_hub >= 1 speaks httpx

        unreachable += (httpx.TransportError,)
    except ImportError:
        pass
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="Upload from lora_nb")
    except HfHubHTTPError as e:
        raise ConfigError("push", problem=f"the Hub refused the upload to {repo_id}: {first_line(e)}") from None
    except unreachable as e:
        raise ConfigError("push", problem=f"could not reach the Hugging Face Hub ({first_line(e)}); check the "
                          "network (and HF_HUB_OFFLINE), then push again") from None
    return f"https://huggingface.co/{repo_id}"


def adapter_files(folder: Union[str, Path]) -> list[str]:
    """The files of an adapter folder that a push uploads (PEFT's blank README.md left out).

    Example:
        >>> adapter_files("runs/x/adapter")  # doctest: +SKIP
        ['adapter_config.json', 'adapter_model.safetensors', 'lora_nb.json', 'tokenizer.json', ...]
    """
    return sorted(p.name for p in Path(folder).iterdir() if p.is_file() and p.name != "README.md")

