"""Load a model and tokenizer in full precision, 8-bit or 4-bit (QLoRA), through bitsandbytes.

Memory, roughly, for N parameters: bf16 2N bytes, 8-bit N bytes, 4-bit (NF4 with double
quantisation) about 0.53N bytes. 4-bit computes in bf16/fp32, so a step costs a little more than in
bf16; the point is fitting a model that would not fit otherwise.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional

from ..hf.devices import resolve_dtype as torch_dtype_of
from ..hf.models import load_model_and_tokenizer
from ..core.errors import ConfigError, first_line, strict_flags
from ..core.files import expand_user
from ..runs.provenance import record
from ..core.progress import worth_a_bar
from ..core.quiet import quietly
from ..recipe.arguments import known_names
from ..recipe.schema import DTYPES, QUANTS, ModelSection, coerce


def resolve_dtype(dtype: str = "auto"):
    """The torch dtype for ``dtype``: ``auto`` is bf16 on GPUs that have it (fp16 on older ones), and on
    CPUs with AVX512-BF16 or AMX; fp32 on other CPUs.

    :func:`lora_nb.hf.devices.resolve_dtype`, with the name checked first.

    Example:
        >>> resolve_dtype("fp32")
        torch.float32
    """
    coerce("model.dtype", dtype, str, DTYPES)
    return torch_dtype_of(dtype)


def quant_kwargs(quant: Optional[str]) -> Optional[dict]:
    """``BitsAndBytesConfig`` keywords for ``quant``: 4bit is QLoRA's NF4 + double quantisation.

    The compute dtype is left out: the loader adds the dtype it resolves.

    Example:
        >>> quant_kwargs("4bit")["bnb_4bit_quant_type"]
        'nf4'
    """
    coerce("model.quant", quant, Optional[str], QUANTS)
    if quant == "4bit":
        return dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
    if quant == "8bit":
        return dict(load_in_8bit=True)
    return None


def model_class(config: Any):
    """The transformers class that loads ``config``: its own architecture when transformers has it,
    else ``AutoModelForCausalLM``.

    Example:
        >>> from transformers import GPT2Config
        >>> model_class(GPT2Config(architectures=["GPT2LMHeadModel"])).__name__
        'GPT2LMHeadModel'
    """
    import transformers

    for arch in getattr(config, "architectures", None) or ():
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    return transformers.AutoModelForCausalLM


def device_kwargs(model: Any) -> dict:
    """SFTConfig settings that follow the model and the machine (:func:`lora_nb.hf.devices.trainer_device_kwargs`
    for the dtype ``model`` computes in).

    Example:
        >>> device_kwargs(model)["bf16"]   # an fp32 model
        False
    """
    from ..hf.devices import compute_dtype, trainer_device_kwargs

    return trainer_device_kwargs(compute_dtype(model))


@strict_flags
def read_config(source: str, trust_remote_code: bool = False):
    """The transformers config of a local folder or Hub name; a ConfigError naming ``model`` if there is none.

    A repository that ships its own model code (``auto_map``) is refused unless
    ``trust_remote_code=True``: that code would run on this machine.

    Example:
        >>> read_config("/nope")
        Traceback (most recent call last):
        ...
        lora_nb.core.errors.ConfigError: model: is not a local folder with config.json, nor a reachable Hub model; check the path (got '/nope').
    """  # noqa: E501
    from transformers import AutoConfig

    source = expand_user(source)  # ~/models/x, $MODELS/x; a Hub name stays as it is
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as error:
        # transformers' own: a repo-id rule, a connection error, an unknown model_type
        reason = first_line(error)
        if "trust_remote_code" in str(error):
            problem = ("ships its own model code (auto_map in config.json), which runs only with "
                       "trust_remote_code=True: read that code first, then pass trust_remote_code=True if you trust it")
        elif os.path.isfile(os.path.join(source, "config.json")):
            problem = f"has a config.json that transformers cannot read ({reason})"
        elif os.path.isdir(source) or source.startswith((os.sep, ".", "~")):  # a path: a Hub reason would mislead
            problem = "is not a local folder with config.json, nor a reachable Hub model; check the path"
        else:
            problem = (f"is not a local folder with config.json, nor a reachable Hub model ({reason}); check the name "
                       "and the network (HF_HUB_OFFLINE)")
        raise ConfigError("model", source, problem=problem) from None


DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential", "cpu", "cuda", "cuda:N", "mps",
               "a {module: device} dict")


def check_device_map(device_map: Any) -> None:
    """Refuse a ``device_map`` that ``from_pretrained`` would not take, or a GPU this machine lacks.

    Example:
        >>> check_device_map("gpu")
        Traceback (most recent call last):
        ...
        lora_nb.core.errors.ConfigError: model.device_map: not a device map (got 'gpu'). Allowed: auto, balanced, balanced_low_0, sequential, cpu, cuda, cuda:N, mps, a {module: device} dict. Did you mean 'cpu'?
    """  # noqa: E501
    import torch

    key = "model.device_map"
    devices = list(device_map.values()) if isinstance(device_map, dict) else [device_map]
    for device in devices:
        if device is None and not isinstance(device_map, dict) or device in DEVICE_MAPS[:5] + ("disk",):
            continue
        if isinstance(device, int) and not isinstance(device, bool) and device >= 0 or (
                isinstance(device, str) and re.fullmatch(r"cuda(:\d+)?", device)):
            if not torch.cuda.is_available():
                raise ConfigError(key, device_map, problem="asks for a CUDA GPU, and torch sees none here "
                                  "(a CPU-only torch, or no GPU): leave device_map unset to load on the CPU")
            continue
        if device == "mps" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            continue
        raise ConfigError(key, device_map, problem="not a device map" if device != "mps" else "asks for Apple's MPS, "
                          "which torch does not have here", allowed=None if device == "mps" else DEVICE_MAPS)


def _only_pickles(folder: str) -> bool:
    return os.path.isdir(folder) and not any(Path(folder).glob("*.safetensors")) and any(Path(folder).glob("*.bin"))


@known_names()
@strict_flags
@quietly(progress=worth_a_bar)
def load(
    model: str,
    *,
    quant: Optional[str] = ModelSection.quant,
    dtype: str = ModelSection.dtype,
    device_map: Any = ModelSection.device_map,
    trust_remote_code: bool = ModelSection.trust_remote_code,
):
    """Load ``model`` (a Hub name or a local folder, ``~`` and ``$VARS`` expanded) and its tokenizer, ready for LoRA.

    ``quant="4bit"`` is QLoRA: NF4 weights with double quantisation, computing in ``dtype`` (bf16
    on GPUs that support it), then PEFT's ``prepare_model_for_kbit_training``. ``"8bit"`` is
    LLM.int8. Both run on the CPU too with bitsandbytes >= 0.49. Weights load from safetensors;
    ``trust_remote_code`` stays off unless you ask.

    Returns ``(model, tokenizer)``. A tokenizer without a pad token gets its eos token as pad.
    transformers' names work too: ``load_in_4bit=True`` is ``quant="4bit"``, ``torch_dtype=torch.bfloat16``
    is ``dtype="bf16"`` (:mod:`lora_nb.recipe.names`).

    Example:
        >>> model, tok = load("my-model")   # or a Hub name: load("Qwen/Qwen2.5-0.5B-Instruct", quant="4bit")
    """
    if not isinstance(model, (str, os.PathLike)) or not os.fspath(model):
        raise ConfigError("model", problem=f"must be a Hub model name or a local folder, not {model!r}")
    model = expand_user(model)  # ~/models/x, $MODELS/x; a Hub name stays as it is
    torch_dtype = resolve_dtype(dtype)
    quantization = quant_kwargs(quant)
    check_device_map(device_map)
    config = read_config(model, trust_remote_code)
    from safetensors import SafetensorError

    try:
        loaded, tokenizer = load_model_and_tokenizer(
            model, dtype=torch_dtype, quantization=quantization, device_map=device_map,
            trust_remote_code=trust_remote_code, model_class=model_class(config).__name__,
        )
    except (OSError, ValueError, SafetensorError) as error:  # no safetensors weights, a torn file, a bad shape
        if isinstance(error, SafetensorError):
            problem = (f"its safetensors weights are damaged or cut short ({first_line(error)}): download or save "
                       "them again")
        elif "safetensors" in str(error).lower() or _only_pickles(model):
            problem = (f"cannot be loaded: {first_line(error)}; lora_nb loads safetensors weights only "
                       "(model.safetensors), never pickle .bin files")
        else:
            problem = f"cannot be loaded: {first_line(error)}"
        raise ConfigError("model", model, problem=problem) from None
    # Remembered so a run's recipe and exported script load the model the same way.
    record(loaded, model=ModelSection(name=str(model), quant=quant, dtype=dtype, device_map=device_map,
                                      trust_remote_code=trust_remote_code))
    return loaded, tokenizer
