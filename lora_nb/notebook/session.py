"""The notebook session: the current model, tokenizer and adapter, and the runs so far.
Magics and the panel act through it; it acts through the Python API only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError
from ..recipe import LoraSection, ModelSection, Recipe, build_section, model_kwargs


class Session:
    """State shared by ``%lora`` and the panel within one kernel.

    Example:
        >>> s = Session()
        >>> s.load("./my-model", quant="4bit")            # doctest: +SKIP
        >>> s.inject(r=8, targets="attention")            # doctest: +SKIP
        >>> run = s.train("train.jsonl", steps=50)        # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.model: Any = None
        self.tokenizer: Any = None
        self.model_section: Optional[ModelSection] = None
        self.lora_section: Optional[LoraSection] = None
        self.runs: list = []
        self.active: Any = None  # the Run training in the background, if any

    def require_model(self, adapter: bool = False) -> None:
        if self.model is None:
            raise ConfigError("model", problem="no model loaded yet: run %lora load MODEL (or lora_nb.load) first")
        if adapter and not hasattr(self.model, "peft_config"):
            raise ConfigError("adapter", problem="the model has no adapter yet: run %lora inject first")

    def require_idle(self) -> None:
        if self.active is not None and self.active.running:
            raise ConfigError("train", problem=f"run {self.active.name} is still training in the background: "
                              "%lora stop or %lora wait first")

    def load(self, name: str, **settings: Any):
        from ..loading import load

        self.require_idle()
        section = build_section(ModelSection, {"name": name, **settings}, "model")
        self.model, self.tokenizer = load(name, **model_kwargs(section))
        self.model_section, self.lora_section = section, None
        return self.model

    def targets(self, model: Any = None, r: int = LoraSection.r):
        from ..discovery import discover

        if model is None:
            self.require_model()
            model = self.model
        return discover(model, r=r)

    def inject(self, **settings: Any):
        from ..injection import inject

        self.require_model()
        self.require_idle()
        self.lora_section = build_section(LoraSection, settings, "lora")
        self.model = inject(self.model, **settings)
        return self.model

    def train(self, data: Any, *, live: bool = True, background: bool = False, **settings: Any):
        """Train the current adapter; with ``live`` a dashboard updates in place. Returns the Run."""
        from ..training import train

        self.require_model(adapter=True)
        self.require_idle()
        callbacks = _live(settings.pop("callbacks", ()), live, background)
        progress = settings.pop("progress", not live)
        run = train(self.model, self.tokenizer, data, callbacks=callbacks, background=background,
                    progress=progress, **settings)
        return self._started(run, background)

    def _started(self, run: Any, background: bool):
        self.runs.append(run)
        if background:
            self.active = run
        return run

    def stop(self):
        if self.active is None or not self.active.running:
            raise ConfigError("stop", problem="no run is training in the background")
        self.active.stop()
        return self.active

    def wait(self):
        if self.active is None:
            raise ConfigError("wait", problem="no run has been started in the background")
        return self.active.wait()

    def generate(self, prompts: Any, **kwargs: Any):
        from ..generation import generate

        self.require_model()
        self.require_idle()
        return generate(self.model, self.tokenizer, prompts, **kwargs)

    def compare(self, prompts: Any, **kwargs: Any):
        from ..generation import compare

        self.require_model(adapter=True)
        self.require_idle()
        return compare(self.model, self.tokenizer, prompts, **kwargs)

    def save(self, folder: str, overwrite: bool = False) -> Path:
        from ..adapters import save

        self.require_model(adapter=True)
        return save(self.model, folder, tokenizer=self.tokenizer, overwrite=overwrite)

    def merge(self, folder: str, **kwargs: Any) -> Path:
        from ..merging import merge

        self.require_model(adapter=True)
        self.require_idle()
        return merge(self.model, folder, tokenizer=self.tokenizer, **kwargs)

    def run_recipe(self, recipe: Recipe, live: bool = True, *, on_loaded_base: bool = False, background: bool = False,
                   callbacks: Any = (), progress: Optional[bool] = None):
        """Load, inject and train as ``recipe`` says (lora_nb.run, the one orchestrator), keeping
        model and run in the session. ``on_loaded_base``: adapt the model already loaded instead
        of loading ``recipe.model`` again (the panel's reruns)."""
        from ..pipeline import run

        self.require_idle()
        base = None
        if on_loaded_base:
            self.require_model()
            base = (self.model, self.tokenizer)

        def keep(model: Any, tokenizer: Any) -> None:
            self.model, self.tokenizer = model, tokenizer
            self.model_section, self.lora_section = recipe.model, recipe.lora

        started = run(recipe, base=base, callbacks=_live(callbacks, live, background), background=background,
                      progress=not live if progress is None else progress, on_model=keep)
        return self._started(started, background)

    def recipe(self) -> Recipe:
        """The experiment so far: the last run's recipe, else what has been loaded and injected."""
        if self.runs:
            return self.runs[-1].recipe
        self.require_model()
        raise ConfigError("export", problem="needs training data: run %lora train data=... first (no run yet)")

    def export(self) -> str:
        """The session so far as a standalone transformers/peft/trl script."""
        from ..pipeline import to_script

        return to_script(self.recipe())

    def run_table(self):
        from ..runs import RunTable

        return RunTable(self.runs)


def _live(callbacks: Any, live: bool, background: bool) -> list:
    """``callbacks`` plus, when ``live``, a LiveChart (with Stop / Save now for background runs)."""
    callbacks = list(callbacks)
    if live:
        from .live import LiveChart

        callbacks.append(LiveChart(controls=background))  # it shows itself once the trainer is built, in this thread
    return callbacks
