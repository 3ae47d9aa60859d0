"""Load a model and tokenizer in full precision, 8-bit or 4-bit (QLoRA), through bitsandbytes.

Memory, roughly, for N parameters: bf16 2N bytes, 8-bit N bytes, 4-bit (NF4 with double
quantisation) about 0.53N bytes. 4-bit computes in bf16/fp32, so a step costs a little more than in
bf16; the point is fitting a model that would not fit otherwise.
"""

from __future__ import annotations

from typing import Any, Optional

from . import portable
from .errors import ConfigError
from .files import expand_user
from .provenance import record
from .progress import worth_a_bar
from .quiet import quietly
from .recipe import DTYPES, QUANTS, ModelSection, coerce


def resolve_dtype(dtype: str = "auto"):
    """The torch dtype for ``dtype``: ``auto`` is bf16 on GPUs that have it, fp16 on others, fp32 on CPU.

    :func:`lora_nb.portable.resolve_dtype`, with the name checked first.

    Example:
        >>> resolve_dtype("fp32")
        torch.float32
    """
    coerce("model.dtype", dtype, str, DTYPES)
    return portable.resolve_dtype(dtype)


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
    """SFTConfig settings that follow the model and the machine (:func:`lora_nb.portable.trainer_device_kwargs`
    for the dtype ``model`` computes in).

    Example:
        >>> device_kwargs(model)["bf16"]   # doctest: +SKIP
        True
    """
    from .portable import compute_dtype, trainer_device_kwargs

    return trainer_device_kwargs(compute_dtype(model))


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

    Example:
        >>> model, tok = load("Qwen/Qwen2.5-0.5B-Instruct", quant="4bit")   # doctest: +SKIP
    """
    from transformers import AutoConfig

    model = expand_user(model)  # ~/models/x, $MODELS/x; a Hub name stays as it is
    torch_dtype = resolve_dtype(dtype)
    quantization = quant_kwargs(quant)
    try:
        config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise ConfigError("model", model, problem=f"cannot be loaded: not a local folder with config.json, nor a reachable Hub model ({e.__class__.__name__})") from None
    loaded, tokenizer = portable.load_model_and_tokenizer(
        model, dtype=torch_dtype, quantization=quantization, device_map=device_map,
        trust_remote_code=trust_remote_code, model_class=model_class(config).__name__,
    )
    # Remembered so a run's recipe and exported script load the model the same way.
    record(loaded, model=ModelSection(name=str(model), quant=quant, dtype=dtype, device_map=device_map,
                                      trust_remote_code=trust_remote_code))
    return loaded, tokenizer
