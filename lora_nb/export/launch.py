"""The accelerate config that launches an exported script on N GPUs: DDP, FSDP or DeepSpeed ZeRO.

``lora-nb export recipe.yaml --launcher accelerate --gpus 4 [--fsdp | --deepspeed zero2|zero3] -o train_lora.py``
writes the script and, next to it, ``accelerate_config.yaml``; ``accelerate launch --config_file
accelerate_config.yaml train_lora.py`` then runs it. The configs are the ones PEFT and TRL document
for LoRA and QLoRA (peft ``examples/sft/configs``, trl ``accelerate_configs``), one process per GPU
on one machine:

- no engine: DDP, a whole copy of the model on each GPU; the fastest while the model fits on one.
- ``fsdp``: FSDP1 shards the frozen base weights, wrapping each decoder layer (the model's own
  layer class); ``use_orig_params: false`` with PEFT's wrap policy keeps the LoRA weights in their
  own shards, checkpoints are sharded and the script gathers the adapter whole at the end. QLoRA
  also offloads the shards to CPU RAM, and the script stores 4-bit weights in the compute dtype
  (``bnb_4bit_quant_storage``) so they shard like the rest.
- ``zero2``: DeepSpeed shards optimizer state and gradients, which for LoRA are small: little
  memory saved over DDP. ``zero3``: also shards the weights, like FSDP.

Mixed precision is left to the script (``mixed_precision: 'no'`` here): its ``SFTConfig`` sets bf16
or fp16 from the model's dtype, as a one-process run does.
"""

from __future__ import annotations

import shlex
from typing import Optional

from ..core.errors import ConfigError
from ..recipe.schema import Recipe

CONFIG_FILE = "accelerate_config.yaml"
ZERO_STAGES = ("zero2", "zero3")
ENGINES = ("fsdp", *ZERO_STAGES)


def launch_config(recipe: Recipe, gpus: int, engine: Optional[str] = None) -> str:
    """The accelerate config (YAML text) that runs ``recipe``'s exported script on ``gpus`` GPUs of one
    machine; ``engine`` None is DDP, else ``fsdp``, ``zero2`` or ``zero3``.

    Raises a ConfigError for fewer than one GPU, an unknown engine, a ``model.device_map`` (each
    process takes its own GPU), 8-bit weights under FSDP (it shards 4-bit ones only), or a model
    whose decoder layer class FSDP cannot find.

    Example:
        >>> import yaml
        >>> text = launch_config(Recipe.from_yaml("recipe.yaml"), 4, "fsdp")
        >>> yaml.safe_load(text)["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"]
        'LlamaDecoderLayer'
    """
    import yaml

    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1:
        raise ConfigError("gpus", gpus, problem="must be a whole number of GPUs, at least 1")
    if engine is not None and engine not in ENGINES:
        raise ConfigError("engine", engine, allowed=ENGINES)
    if recipe.model.device_map is not None:
        raise ConfigError("model.device_map", recipe.model.device_map,
                          problem="accelerate launch gives each process a GPU of its own: leave device_map null")
    config = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "distributed_type": ("FSDP" if engine == "fsdp" else "DEEPSPEED" if engine
                             else "MULTI_GPU" if gpus > 1 else "NO"),
        "downcast_bf16": "no",
        **_engine_config(recipe, engine),
        "machine_rank": 0,
        "main_training_function": "main",
        "mixed_precision": "no",  # the script's SFTConfig sets bf16/fp16 from the model's dtype
        "num_machines": 1,
        "num_processes": gpus,
        "rdzv_backend": "static",
        "same_network": True,
        "tpu_env": [],
        "tpu_use_cluster": False,
        "tpu_use_sudo": False,
        "use_cpu": False,
    }
    return yaml.safe_dump(config, sort_keys=False)


def launch_command(script: str, config: str = CONFIG_FILE) -> str:
    """The shell command that launches ``script`` with the accelerate config file ``config``.

    Example:
        >>> launch_command("train_lora.py")
        'accelerate launch --config_file accelerate_config.yaml train_lora.py'
    """
    return f"accelerate launch --config_file {shlex.quote(str(config))} {shlex.quote(str(script))}"


def _engine_config(recipe: Recipe, engine: Optional[str]) -> dict:
    """The engine's section of the config: ``fsdp_config`` or ``deepspeed_config`` (none for DDP)."""
    if engine is None:
        return {"gpu_ids": "all"}
    if engine in ZERO_STAGES:
        stage = int(engine[-1])
        return {"deepspeed_config": {
            "deepspeed_multinode_launcher": "standard",
            "offload_optimizer_device": "none",
            "offload_param_device": "none",
            "zero3_init_flag": stage == 3,
            **({"zero3_save_16bit_model": True} if stage == 3 else {}),  # the adapter saved as weights, not shards
            "zero_stage": stage,
        }}
    if recipe.model.quant == "8bit":
        raise ConfigError("model.quant", "8bit", problem="FSDP shards 4-bit (QLoRA) or unquantised weights, not 8-bit "
                          "ones: use quant 4bit (QLoRA)")
    qlora = recipe.model.quant == "4bit"
    return {"fsdp_config": {
        "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "fsdp_backward_prefetch": "BACKWARD_PRE",
        "fsdp_cpu_ram_efficient_loading": True,
        "fsdp_forward_prefetch": False,
        "fsdp_offload_params": qlora,  # PEFT's QLoRA config: the shards wait in CPU RAM
        "fsdp_sharding_strategy": "FULL_SHARD",
        "fsdp_state_dict_type": "SHARDED_STATE_DICT",
        "fsdp_sync_module_states": True,
        "fsdp_transformer_layer_cls_to_wrap": ",".join(layer_classes(recipe)),
        "fsdp_use_orig_params": False,  # with PEFT's wrap policy: the memory saving (PEFT's FSDP guide)
        "fsdp_version": 1,
    }}


def layer_classes(recipe: Recipe) -> list[str]:
    """The class names of the model's decoder layers (transformers' ``_no_split_modules`` found in the
    model), the units FSDP wraps; read from the config alone (a model on the meta device).

    Example:
        >>> layer_classes(Recipe.from_dict({"model": {"name": "my-model"}}))   # a Hub name reads its config
        ['LlamaDecoderLayer']
    """
    from ..model.discovery import meta_model

    model = meta_model(recipe.model.name, trust_remote_code=recipe.model.trust_remote_code)
    present = {type(module).__name__ for module in model.modules()}
    found = sorted(name for name in model._no_split_modules or () if name in present)
    if not found:
        raise ConfigError("model.name", recipe.model.name,
                          problem="FSDP wraps the model's decoder layers, but transformers names no layer class "
                                  "for this model (_no_split_modules); use engine zero3 (--deepspeed zero3) instead")
    return found
