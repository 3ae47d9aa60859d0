"""lora_nb.export.launch: the exported script under accelerate launch, and the configs export writes for it.

Two CPU processes (gloo) stand in for two GPUs: the script must train them as one run. FSDP and
DeepSpeed need GPUs, so their configs are checked as accelerate's own launcher reads them: the
settings each process would be started with.
"""

from __future__ import annotations

import json
import os
import shlex
import socket

import pytest
import yaml
from test_export import load_script, run_main, script_losses, write_rows

import lora_nb
from lora_nb.core.errors import ConfigError
from lora_nb.export.launch import CONFIG_FILE, launch_command, launch_config, layer_classes

STEPS = 3
# Measured over 12 steps, one process (batch 4) against two (batch 2 each): the same losses to the last
# bit with one thread per process, and within one float32 step (8e-8 relative) with two threads, where
# sums run in another order; adapter weights 1.5e-8 apart. Two processes each training alone (what a
# CPU-only launch did before the script made it one run) log 1.5e-4 off from the first step and end
# with weights 2e-3 apart. The tolerances sit between the two.
LOSS_RTOL, WEIGHT_ATOL = 1e-6, 1e-6


def recipe(llama, data, batch_size, quant=None):
    return lora_nb.Recipe.from_dict({
        # float32: the tolerances are float32's (bf16, dtype auto on a CPU with bf16 instructions, rounds apart)
        "model": {"name": llama, "quant": quant, "dtype": "fp32"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "attention"},  # no dropout: no per-process randomness
        "data": {"path": data},
        # random batches: a length-grouped order depends on the per-process batch size, so only random
        # batches are the same global batches at any process count
        "train": {"steps": STEPS, "batch_size": batch_size, "max_length": 64, "lr": 1e-3, "group_by_length": False,
                  "sft": {"save_steps": STEPS}},
    })


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(command, *script_args, monkeypatch):
    """Run the ``accelerate launch ...`` command export prints, as accelerate's CLI would (its parser, its
    launcher; in this process, which saves a third interpreter's imports), on the CPU: GPUs are hidden,
    and ACCELERATE_USE_CPU is unset so the script itself has to make the processes one CPU run."""
    from accelerate.commands.launch import launch_command as accelerate_launch
    from accelerate.commands.launch import launch_command_parser

    words = shlex.split(command)
    assert words[:2] == ["accelerate", "launch"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    accelerate_launch(launch_command_parser().parse_args(["--main_process_port", str(free_port()), *words[2:],
                                                          *script_args]))


def test_two_processes_log_the_losses_of_one_with_the_same_global_batch(llama, parity, in_tmp, monkeypatch, capfd):
    data = write_rows(in_tmp / "train.jsonl", parity[0])
    (in_tmp / "one.py").write_text(lora_nb.to_script(recipe(llama, data, batch_size=4)))
    run_main(load_script(in_tmp / "one.py"), monkeypatch, "--output-dir", in_tmp / "one")
    two = recipe(llama, data, batch_size=2)
    (in_tmp / "train_lora.py").write_text(lora_nb.to_script(two))
    (in_tmp / CONFIG_FILE).write_text(launch_config(two, 2))

    capfd.readouterr()
    launch(launch_command("train_lora.py"), "--output-dir", "two", monkeypatch=monkeypatch)

    printed = capfd.readouterr().out
    assert "process 0 of 2 on cpu" in printed and "process 1 of 2 on cpu" in printed
    (one_losses, _), (two_losses, _) = script_losses(in_tmp / "one"), script_losses(in_tmp / "two")
    assert [step for step, _ in two_losses] == [step for step, _ in one_losses] == list(range(1, STEPS + 1))
    for (_, a), (_, b) in zip(one_losses, two_losses):
        assert b == pytest.approx(a, rel=LOSS_RTOL)
    state = json.loads((in_tmp / "two" / "checkpoints" / "trainer_state.json").read_text())
    # each step: 2 rows in each of 2 processes
    assert state["log_history"][-1]["epoch"] == STEPS * 2 * 2 / len(parity[0])
    # one adapter, written once: the same files as the one-process run's, and each process's RNG state checkpointed
    assert sorted(os.listdir(in_tmp / "two")) == ["adapter", "checkpoints"]
    assert sorted(os.listdir(in_tmp / "two" / "adapter")) == sorted(os.listdir(in_tmp / "one" / "adapter"))
    last = in_tmp / "two" / "checkpoints" / f"checkpoint-{STEPS}"
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= set(os.listdir(last))
    assert adapter_weights(in_tmp / "two") == pytest.approx(adapter_weights(in_tmp / "one"), rel=0, abs=WEIGHT_ATOL)


def adapter_weights(run):
    from safetensors.torch import load_file

    weights = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    return [value for name in sorted(weights) for value in weights[name].flatten().tolist()]


# --- the configs, as accelerate's launcher reads them (FSDP and DeepSpeed need GPUs to run) --------------


def process_env(config_file):
    """(launch arguments, the environment each process starts with) for ``accelerate launch --config_file
    config_file``: accelerate's own parser, config merge and launcher code, up to starting the processes."""
    from accelerate.commands.launch import (
        _validate_launch_command,
        launch_command_parser,
    )
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config_file), "train_lora.py"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command sets it
        return args, prepare_deepspeed_cmd_env(args)[1]
    return args, prepare_multi_gpu_env(args)


def write_config(folder, recipe, gpus, engine):
    path = folder / CONFIG_FILE
    path.write_text(launch_config(recipe, gpus, engine))
    return path


@pytest.mark.parametrize("engine", [None, "fsdp", "zero2", "zero3"])
def test_accelerate_reads_each_config_for_n_processes(llama, tmp_path, engine):
    from accelerate.commands.config.config_args import ClusterConfig

    path = write_config(tmp_path, recipe(llama, "d.jsonl", 4), 4, engine)

    config = ClusterConfig.from_yaml_file(str(path))  # unknown keys would raise here
    assert yaml.safe_load(path.read_text())["num_processes"] == config.num_processes == 4
    args, env = process_env(path)
    assert args.num_processes == 4 and args.num_machines == 1
    assert env["ACCELERATE_MIXED_PRECISION"] == "no"  # the script's SFTConfig decides bf16/fp16
    assert config.distributed_type.value == {None: "MULTI_GPU", "fsdp": "FSDP"}.get(engine, "DEEPSPEED")
    if engine is None:
        assert args.multi_gpu and args.nproc_per_node == "4"
    if engine in ("zero2", "zero3"):
        stage = engine[-1]
        assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == stage
        assert env["ACCELERATE_DEEPSPEED_ZERO3_INIT"] == str(stage == "3").lower()
        assert (env["ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE"] == env["ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE"]
                == "none")
        assert env.get("ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL") == ("true" if stage == "3" else None)


def test_fsdp_wraps_decoder_layers_and_lora_weights_as_peft_documents(llama, tmp_path, monkeypatch):
    from peft.utils.other import fsdp_auto_wrap_policy

    _, env = process_env(write_config(tmp_path, recipe(llama, "d.jsonl", 4), 2, "fsdp"))

    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "1"
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert env["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "LlamaDecoderLayer"
    # PEFT's FSDP guide for LoRA: the original parameters flattened (use_orig_params false: the memory
    # saving), weights loaded once and sent to the other processes, checkpoints sharded, no CPU offload
    assert env["FSDP_USE_ORIG_PARAMS"] == "false"
    assert env["FSDP_CPU_RAM_EFFICIENT_LOADING"] == env["FSDP_SYNC_MODULE_STATES"] == "true"
    assert env["FSDP_STATE_DICT_TYPE"] == "SHARDED_STATE_DICT" and env["FSDP_SHARDING_STRATEGY"] == "FULL_SHARD"
    assert env["FSDP_OFFLOAD_PARAMS"] == "false" and env["FSDP_BACKWARD_PREFETCH"] == "BACKWARD_PRE"
    # transformers' Trainer wraps a PEFT model with PEFT's policy, which reads the class from the same
    # setting: each decoder layer of the real model is one unit, and each LoRA weight one of its own
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", env["FSDP_TRANSFORMER_CLS_TO_WRAP"])
    model, _ = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, targets="attention")
    policy = fsdp_auto_wrap_policy(model)
    units = [name for name, module in model.named_modules() if policy(module=module, recurse=False, nonwrapped_numel=0)]
    layers = [name for name, module in model.named_modules() if type(module).__name__ == "LlamaDecoderLayer"]
    loras = [name for name, module in model.named_modules() if name.endswith(("lora_A.default", "lora_B.default"))]
    assert layers and loras and sorted(units) == sorted(layers + loras)


@pytest.mark.parametrize("engine, sharded", [(None, False), ("zero2", False), ("fsdp", True), ("zero3", True)])
def test_qlora_stores_4bit_weights_in_the_compute_dtype_where_weights_are_sharded(llama, tmp_path, monkeypatch, engine,
                                                                                  sharded):
    import torch

    qlora = recipe(llama, "d.jsonl", 4, quant="4bit")
    args, env = process_env(write_config(tmp_path, qlora, 2, engine))
    for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE"):
        monkeypatch.delenv(name, raising=False)
        if name in env:
            monkeypatch.setenv(name, env[name])  # as this process of the launch would see it
    (tmp_path / "train_lora.py").write_text(lora_nb.to_script(qlora))
    script = load_script(tmp_path / "train_lora.py")

    settings = script["quantization"](torch.bfloat16)
    model = script["load_quantized_model"](llama, dtype=torch.bfloat16, quantization=settings)

    storage = {p.dtype for p in model.parameters() if type(p).__name__ == "Params4bit"}
    assert storage == ({torch.bfloat16} if sharded else {torch.uint8})  # bf16: shards like the layers around it
    if engine == "fsdp":
        assert args.fsdp_offload_params is True  # PEFT's QLoRA + FSDP config: the shards wait in CPU RAM


@pytest.mark.parametrize("change, key", [
    ({"gpus": 0}, "gpus"),
    ({"engine": "zero4"}, "engine"),
    ({"engine": "fsdp", "quant": "8bit"}, "model.quant"),
    ({"device_map": "auto"}, "model.device_map"),
])
def test_launch_config_refuses_what_cannot_launch(llama, change, key):
    r = recipe(llama, "d.jsonl", 4, quant=change.get("quant"))
    r.model.device_map = change.get("device_map")

    with pytest.raises(ConfigError, match=f"^{key}: "):
        launch_config(r, change.get("gpus", 2), change.get("engine"))


def test_layer_classes_are_the_models_own(tiny):
    for family, expected in [("gpt2", ["GPT2Block"]), ("phi3", ["Phi3DecoderLayer"]),
                             ("qwen3_moe", ["Qwen3MoeDecoderLayer"])]:
        assert layer_classes(lora_nb.Recipe.from_dict({"model": {"name": str(tiny(family))}})) == expected
