"""Functions shared by lora_nb and the scripts it exports: the one copy of the path both take.

Exported scripts run without lora_nb installed, so :mod:`lora_nb.export` copies this whole file
into each script, below the script's imports (its docstring and ``__future__`` line left out).
That is why this file imports nothing from lora_nb, keeps its imports inside the functions
(standard library, torch and the Hugging Face libraries only; tests/test_portable.py checks), and
holds what a script needs to rebuild a run exactly: the dtype, the model load, the data files,
formats and eval split, the 4-bit layout and the checkpoint to resume.
"""

from __future__ import annotations

ALPACA_PROMPT = "### Instruction:\n{instruction}\n\n### Response:\n"
ALPACA_PROMPT_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"


# The dtype names of a recipe, as torch names them ("auto" is resolved by resolve_dtype).
TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# The data files read by extension, and the datasets builder that reads each.
DATA_FILES = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def resolve_dtype(name):
    """torch dtype for "auto", "bf16", "fp16" or "fp32". auto is bf16 where the hardware computes
    in it natively: GPUs that support it (fp16 on older ones), and CPUs with AVX512-BF16 or AMX
    (:func:`cpu_computes_bf16`), where it trains about 1.2x faster than fp32 at half the memory;
    fp32 on other CPUs, which would only emulate bf16.

    Example:
        >>> resolve_dtype("bf16")
        torch.bfloat16
    """
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_computes_bf16() else torch.float32
    return getattr(torch, TORCH_DTYPES[name])


def cpu_computes_bf16():
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX), which torch's CPU
    kernels use: there bf16 is faster than fp32; elsewhere it is emulated and slower.

    Example:
        >>> cpu_computes_bf16() in (True, False)
        True
    """
    return bool(cpu_bf16_features())


def cpu_bf16_features():
    """The bf16 matrix instruction sets this CPU has, by name ("AVX512-BF16", "AMX"), from torch's
    own probes (torch.cpu).

    Example:
        >>> set(cpu_bf16_features()) <= {"AVX512-BF16", "AMX"}
        True
    """
    import torch

    cpu = getattr(torch, "cpu", None)
    probes = (("AVX512-BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported"))
    return [name for name, probe in probes if getattr(cpu, probe, lambda: False)()]


def compute_dtype(model):
    """The dtype ``model`` computes in: a 4-bit model's compute dtype, else its config's dtype.

    Example:
        >>> compute_dtype(model)   # doctest: +SKIP
        torch.bfloat16
    """
    import torch

    config = getattr(model, "config", None)
    bnb = getattr(config, "quantization_config", None)
    compute = getattr(bnb, "bnb_4bit_compute_dtype", None) if bnb is not None else None
    if isinstance(compute, torch.dtype):
        return compute
    dtype = getattr(config, "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def trainer_device_kwargs(dtype):
    """SFTConfig settings that follow the compute ``dtype`` and the machine: bf16/fp16 mixed
    precision matching it (TRL turns bf16 on by default), bf16 on a machine without a GPU allowed
    (transformers refuses it there unless told it trains on the CPU on purpose), pinned
    dataloader memory only where there is a GPU to pin for (on a CPU it only warns), and Liger's
    fused kernels on a GPU where ``liger-kernel`` is installed (``pip install lora-nb[liger]``).

    Example:
        >>> import torch
        >>> trainer_device_kwargs(torch.float32)["bf16"]
        False
    """
    import torch

    import importlib.util

    gpu = torch.cuda.is_available()
    kwargs = dict(bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, dataloader_pin_memory=gpu)
    if kwargs["bf16"] and not gpu:
        kwargs["use_cpu"] = True
    if gpu and importlib.util.find_spec("liger_kernel") is not None:
        kwargs["use_liger_kernel"] = True  # H200: same speed, 1.2 GiB less (LoRA); 7% faster (QLoRA)
    return kwargs


# What one training step holds, per token, in the activation dtype (lora_nb.memory explains it).
# Without gradient checkpointing each decoder layer keeps the tensors autograd saves: about 14
# hidden-size vectors (norm inputs and outputs, the LoRA dropout copies of each adapted input, q
# before and after RoPE, the attention output), 4 of the key/value width and 5 of the MLP width
# (gate, up, their activation and product, the down input's copy). With it, each layer keeps its
# input, and one layer at a time is rebuilt in full. TRL scores the LM head in tiles of up to 4096
# tokens × 32768 vocabulary entries. Per device, as measured: on the CPU (peak RSS growth of real
# steps, tests/test_memory.py) the allocator holds about 1.4× the saved tensors, 12 hidden-size
# vectors per checkpointed layer, and 39 bytes per head-tile element (its fp32 torch ops); on a GPU
# (torch.cuda.max_memory_allocated, benchmarks/gpu.sh) the counts as they are and the tile's bf16
# buffer with its fp32 reductions, about 3 bytes an element. On a CPU training in bf16 (autocast
# over bf16 weights, fp32 adapters) the layers keep fp32 and bf16 copies side by side: per element
# counted at 2 bytes they hold about 2.3× the fp32 counts, and the head tile about 21 bytes.
ACTIVATIONS = {
    "cpu": {"hidden": 20, "kv": 6, "mlp": 7, "checkpointed": 12, "head_bytes": 39.0},
    "cpu-bf16": {"hidden": 46, "kv": 14, "mlp": 16, "checkpointed": 28, "head_bytes": 21.0},
    "gpu": {"hidden": 14, "kv": 4, "mlp": 5, "checkpointed": 1, "head_bytes": 3.0},
}
HEAD_TILE = (4096, 32768)


def model_dims(config):
    """The sizes of a decoder that set its activation memory, from its transformers config.

    Example:
        >>> from transformers import LlamaConfig
        >>> model_dims(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        ...                        num_attention_heads=4, num_key_value_heads=2, vocab_size=100))
        {'hidden': 64, 'layers': 2, 'heads': 4, 'kv': 32, 'mlp': 128, 'vocab': 100}
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden, heads = text.hidden_size, text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    mlp = getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * hidden
    per_expert, active = getattr(text, "moe_intermediate_size", None), getattr(text, "num_experts_per_tok", None)
    if per_expert and active:  # a token passes through its top-k experts (and a shared one, where there is)
        mlp = per_expert * active + (getattr(text, "shared_expert_intermediate_size", None) or 0)
    kv = (getattr(text, "num_key_value_heads", None) or heads) * head_dim
    return dict(hidden=hidden, layers=text.num_hidden_layers, heads=heads, kv=kv, mlp=mlp, vocab=text.vocab_size)


def activation_kind(gpu, dtype_bytes):
    """The key of :data:`ACTIVATIONS` (and of lora_nb.memory's reserve) for a step on a GPU, or on a
    CPU in fp32 or in a half dtype, where autocast keeps copies in both.

    Example:
        >>> activation_kind(False, 2)
        'cpu-bf16'
    """
    return "gpu" if gpu else "cpu" if dtype_bytes == 4 else "cpu-bf16"


def activation_bytes(dims, *, batch_size, max_length, checkpointing, dtype_bytes, gpu):
    """(decoder layers, LM head and loss) bytes a training step of ``batch_size`` examples of
    ``max_length`` tokens holds at its peak, for ``dims`` from :func:`model_dims`.

    With gradient checkpointing the layers keep only their inputs, and one layer at a time is
    recomputed in full during the backward pass.

    Example:
        >>> dims = dict(hidden=576, layers=30, heads=9, kv=192, mlp=1536, vocab=49152)
        >>> layers, head = activation_bytes(dims, batch_size=4, max_length=256, checkpointing=False, dtype_bytes=4, gpu=False)
        >>> round(layers / 2**30, 2), round(head / 2**30, 2)
        (2.68, 1.22)
    """
    tokens = batch_size * max_length
    c = ACTIVATIONS[activation_kind(gpu, dtype_bytes)]
    per_layer = tokens * (c["hidden"] * dims["hidden"] + c["kv"] * dims["kv"] + c["mlp"] * dims["mlp"]) * dtype_bytes
    if checkpointing:
        layers = dims["layers"] * tokens * c["checkpointed"] * dims["hidden"] * dtype_bytes + per_layer
    else:
        layers = dims["layers"] * per_layer
    head = min(tokens, HEAD_TILE[0]) * min(dims["vocab"], HEAD_TILE[1]) * c["head_bytes"]
    return layers, int(head)


def free_memory(device=None):
    """Bytes free for training now: on the GPU the model is on (CUDA's own count), else the
    memory the OS can still give (MemAvailable)."""
    import torch

    if torch.cuda.is_available() and (device is None or getattr(device, "type", device) == "cuda"):
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024


def needs_checkpointing(model, *, batch_size, max_length):
    """(whether to turn gradient checkpointing on, why): on only when a step's activations would
    not fit in 90% of the memory still free with the model loaded; without it a step runs about
    1.3–3× faster (benchmarks/results.md), so it is off when it is not needed.

    Example:
        >>> on, why = needs_checkpointing(model, batch_size=4, max_length=1024)   # doctest: +SKIP
    """
    import torch

    device = next(model.parameters()).device
    gpu = device.type == "cuda"
    dims = model_dims(model.config)
    layers, head = activation_bytes(dims, batch_size=batch_size, max_length=max_length, checkpointing=False,
                                    dtype_bytes=torch.finfo(compute_dtype(model)).bits // 8, gpu=gpu)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) * 16  # fp32 weight, grad, AdamW's two
    need, free = layers + head + trainable, free_memory(device if gpu else "cpu")
    gib = 2 ** 30
    if need <= 0.9 * free:
        return False, f"a step needs about {need / gib:.1f} GiB, {free / gib:.1f} GiB is free"
    return True, (f"gradient checkpointing on: a step without it needs about {need / gib:.1f} GiB of activations and "
                  f"optimizer state, more than the {free / gib:.1f} GiB free")


def choose_checkpointing(model, setting, *, batch_size, max_length):
    """Gradient checkpointing as the recipe sets it (True/False), or, unset (None), on only when
    :func:`needs_checkpointing` says a step would not fit without it; it says so when it turns it on.

    Example:
        >>> choose_checkpointing(None, False, batch_size=4, max_length=1024)
        False
    """
    if setting is not None:
        return setting
    on, why = needs_checkpointing(model, batch_size=batch_size, max_length=max_length)
    if on:
        print(why, flush=True)
    return on


def expand_user(location):
    """A model, dataset or adapter as a user typed it: a path starting with ``~`` or holding
    ``$VARS`` expanded, anything else (a Hub name such as ``org/model``, a relative folder)
    returned unchanged, as text.

    Example:
        >>> import os
        >>> os.environ["LORA_NB_DOCTEST"] = "/data"
        >>> expand_user("$LORA_NB_DOCTEST/train.jsonl"), expand_user("Qwen/Qwen2.5-0.5B")
        ('/data/train.jsonl', 'Qwen/Qwen2.5-0.5B')
        >>> expand_user("~/m") == os.path.join(os.path.expanduser("~"), "m")
        True
    """
    import os

    text = os.fspath(location)
    return os.path.expandvars(os.path.expanduser(text)) if text.startswith("~") or "$" in text else text


def load_model_and_tokenizer(name, *, dtype, quantization=None, device_map=None, trust_remote_code=False,
                             model_class="AutoModelForCausalLM"):
    """The model (ready for LoRA) and its tokenizer, loaded from safetensors.

    ``dtype`` is a torch dtype (:func:`resolve_dtype`); ``quantization`` holds ``BitsAndBytesConfig``
    keywords (4-bit computes in ``dtype``) or None; ``model_class`` names the transformers class.
    A quantised model gets PEFT's ``prepare_model_for_kbit_training``, every 4-bit layer keeps the
    NF4 layout (:func:`pin_4bit_layout`), its full-precision tensors stop mapping the checkpoint file
    (:func:`release_checkpoint_memory`), and a tokenizer without a pad token pads with eos.

    Example:
        >>> model, tok = load_model_and_tokenizer("Qwen/Qwen2.5-0.5B", dtype=resolve_dtype("auto"),
        ...                                       quantization={"load_in_8bit": True})   # doctest: +SKIP
    """
    import torch
    import transformers

    name = expand_user(name)  # ~/models/x, $MODELS/x; a Hub name stays as it is
    config = None
    if quantization:
        compute = {"bnb_4bit_compute_dtype": dtype} if quantization.get("load_in_4bit") else {}
        config = transformers.BitsAndBytesConfig(**quantization, **compute)
    model = getattr(transformers, model_class).from_pretrained(
        name, dtype=dtype, quantization_config=config, device_map=process_device_map(device_map),
        trust_remote_code=trust_remote_code, use_safetensors=True,
    )
    pin_4bit_layout(model)
    if quantization and "bnb_4bit_quant_storage" not in quantization:  # sharded QLoRA keeps one dtype per layer (TRL does the same)
        from peft import prepare_model_for_kbit_training

        # gradient checkpointing is the trainer's to decide, from the memory a step needs (needs_checkpointing)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if quantization:
        release_checkpoint_memory(model)
    tokenizer = transformers.AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def release_checkpoint_memory(model):
    """Give the full-precision tensors of a quantised ``model`` memory of their own, so the
    checkpoint file it was loaded from is no longer mapped, and hand freed heap back to the OS.
    Returns ``model``.

    Why: safetensors weights load as views of the memory-mapped file. The quantised layers get new
    memory, but the tensors left in full precision (embeddings, norms, the LM head) stay views of
    the file when it already holds them in the loading dtype (an fp32 checkpoint loaded in fp32),
    and those views keep the whole file mapped, every page of it read while quantising: the
    process stays as large as the full-precision model (SmolLM2-135M shape, fp32 file, 4-bit:
    1.12 GB resident after a forward, 0.70 GB with this). The copy costs the size of those tensors
    once (110 MB and 0.4 s there). Quantised weights (``Params4bit``, ``Int8Params``) already own
    their memory, and tensors on a GPU map no file: both are left alone.

    Example:
        >>> import torch
        >>> release_checkpoint_memory(torch.nn.Linear(4, 4)).weight.shape
        torch.Size([4, 4])
    """
    import ctypes
    import gc

    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.device.type == "cpu" and type(tensor).__name__ not in ("Params4bit", "Int8Params"):
            tensor.data = tensor.data.clone()
    gc.collect()
    try:  # glibc keeps the quantiser's freed temporaries; elsewhere (macOS, Windows, musl) there is nothing to call
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return model


def process_device_map(device_map):
    """``device_map`` as given; when None, this process's GPU if there is one (so each process of
    ``accelerate launch`` takes its own), else the CPU (None). Under FSDP / ZeRO-3 it stays None:
    the launcher places (and shards) the weights itself."""
    import torch

    if device_map is None and torch.cuda.is_available() and not shards_weights():
        from accelerate import PartialState

        return {"": PartialState().local_process_index}
    return device_map


def shards_weights():
    """Whether accelerate launch started this process to shard the model's weights: FSDP or DeepSpeed ZeRO-3."""
    import os

    def on(name):
        return os.environ.get(name, "false").lower() == "true"

    zero3 = on("ACCELERATE_USE_DEEPSPEED") and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
    return on("ACCELERATE_USE_FSDP") or zero3


def detect_format(columns):
    """The data format its columns imply: messages, alpaca, prompt_completion or text; None if none fits."""
    columns = set(columns)
    if "messages" in columns:
        return "messages"
    if {"instruction", "output"} <= columns:
        return "alpaca"
    if {"prompt", "completion"} <= columns:
        return "prompt_completion"
    if "text" in columns:
        return "text"
    return None


def alpaca_user_text(row):
    """The user turn of an alpaca row: the instruction, then the input (if any) after a blank line."""
    extra = alpaca_input(row)
    return f"{row['instruction']}\n\n{extra}" if extra else str(row["instruction"])


def alpaca_input(row):
    """An alpaca row's input as text ("" when absent or null)."""
    value = row.get("input")
    return "" if value is None else str(value).strip()


def load_rows(source, split="train"):
    """A datasets.Dataset from a json/jsonl/csv/parquet file, a folder, or a Hub dataset name."""
    import os

    from datasets import load_dataset, load_from_disk

    source = expand_user(str(source))  # ~/data/train.jsonl, $DATA/train.jsonl; a Hub name stays as it is
    ext = os.path.splitext(source)[1].lower()
    if os.path.isfile(source) and ext in DATA_FILES:
        with open(source, "rb") as f:  # a byte order mark: datasets 5 reads past it, 4.x fails on it unless told
            bom = DATA_FILES[ext] == "json" and f.read(3) == b"\xef\xbb\xbf"
        options = {"encoding": "utf-8-sig"} if bom else {}
        if DATA_FILES[ext] == "csv":  # every column as text, as written: pandas would make "007" the number 7
            import csv

            from datasets import Features, Value

            with open(source, newline="", encoding="utf-8-sig") as f:
                header = next(csv.reader(f), [])
            options["features"] = Features({name: Value("string") for name in header})
        return load_dataset(DATA_FILES[ext], data_files=source, split="train", **options)
    saved = ("dataset_info.json", "dataset_dict.json")  # save_to_disk's folder of a Dataset, of a DatasetDict
    if os.path.isdir(source) and any(os.path.exists(os.path.join(source, name)) for name in saved):
        data = load_from_disk(source)
        return data[split] if hasattr(data, "keys") else data
    return load_dataset(source, split=split)


def split_eval(rows, eval, seed, source, read=load_rows):
    """(train rows, eval rows): ``eval`` is a fraction of ``rows`` held out by datasets' seeded
    split, another split of ``source`` (see :func:`is_split`), or eval data of its own (a file);
    without ``eval`` the eval rows are None. ``read(data, split)`` reads eval rows.

    Example:
        >>> from datasets import Dataset
        >>> train, held = split_eval(Dataset.from_list([{"text": str(i)} for i in range(10)]), 0.2, 0, None)
        >>> len(train), len(held)
        (8, 2)
    """
    if eval is None:
        return rows, None
    if isinstance(eval, float):
        parts = rows.train_test_split(test_size=eval, seed=seed)
        return parts["train"], parts["test"]
    if is_split(source, eval):
        return rows, read(source, eval)
    return rows, read(eval, "train")


def is_split(source, name):
    """Whether eval ``name`` is a split of ``source`` rather than a file: ``name`` is no existing
    path, and ``source`` is a DatasetDict holding it, or a Hub name or saved-dataset folder."""
    import os

    if not isinstance(name, str) or os.path.exists(name):
        return False
    if hasattr(source, "keys"):  # a DatasetDict
        return name in source
    return isinstance(source, str) and not os.path.isfile(source)


def to_sft_dataset(dataset, fmt, tokenizer, max_chars=None, on_batch=None):
    """Rows in one of TRL's SFT formats, so the loss falls on the response tokens only.

    alpaca becomes prompt/completion (chat turns when the tokenizer has a chat template, else the
    alpaca prompt). messages stay whole when the template can mask assistant turns (TRL's
    assistant_only_loss); otherwise the last assistant turn becomes the completion. text and
    prompt_completion pass through. ``max_chars`` cuts every text longer than that (None keeps
    them whole); ``on_batch(n)`` hears of each batch of ``n`` rows converted (a progress display).
    Rows are converted a thousand at a time: no per-row Python call.

    Example:
        >>> from datasets import Dataset
        >>> to_sft_dataset(Dataset.from_list([{"instruction": "2+2?", "output": "4"}]), "alpaca", None)[0]
        {'prompt': '### Instruction:\\n2+2?\\n\\n### Response:\\n', 'completion': '4'}
    """
    chat = bool(getattr(tokenizer, "chat_template", None))
    last_turn = fmt == "messages" and not masks_assistant_turns(tokenizer)
    rows = dataset if fmt == "alpaca" or last_turn else dataset.select_columns(
        {"text": ["text"], "messages": ["messages"], "prompt_completion": ["prompt", "completion"]}[fmt])
    if rows is not dataset and max_chars is None:  # nothing to change
        if on_batch is not None:
            on_batch(len(rows))
        return rows

    def cut(text):
        return text[:max_chars] if max_chars is not None and text is not None and len(text) > max_chars else text

    def cut_turns(value):  # a conversation: each message's content (not recursive: datasets could not hash it)
        return [{**m, "content": cut(m["content"])} for m in value] if isinstance(value, list) else cut(value)

    def rows_for_trl(batch):
        n = len(next(iter(batch.values())))
        if fmt == "alpaca":
            rows = [{"instruction": i, "input": x, "output": o}
                    for i, x, o in zip(batch["instruction"], batch.get("input", [None] * n), batch["output"])]
            if chat:
                return {"prompt": [[{"role": "user", "content": cut(alpaca_user_text(r))}] for r in rows],
                        "completion": [[{"role": "assistant", "content": cut(r["output"])}] for r in rows]}
            return {"prompt": [cut((ALPACA_PROMPT_INPUT if alpaca_input(r) else ALPACA_PROMPT)
                                   .format(instruction=r["instruction"], input=alpaca_input(r))) for r in rows],
                    "completion": [cut(r["output"]) for r in rows]}
        if last_turn:
            ends = [max(i for i, m in enumerate(turns) if m["role"] == "assistant") for turns in batch["messages"]]
            return {"prompt": [cut_turns(turns[:last]) for turns, last in zip(batch["messages"], ends)],
                    "completion": [cut_turns(turns[last:last + 1]) for turns, last in zip(batch["messages"], ends)]}
        return {name: [cut_turns(v) for v in values] for name, values in batch.items()}

    def convert(batch, on_batch):  # on_batch comes as an argument: datasets hashes it by name, a closure by value
        import gc

        collecting = gc.isenabled()
        gc.disable()  # a batch's thousands of small dicts would set off the cyclic collector, which walks every
        try:  # object of the process (torch and transformers hold hundreds of thousands): 3x the time
            out = rows_for_trl(batch)
        finally:
            if collecting:
                gc.enable()
        if on_batch is not None:
            on_batch(len(next(iter(out.values()))))
        return out

    return rows.map(convert, batched=True, remove_columns=rows.column_names, fn_kwargs={"on_batch": on_batch})


def masks_assistant_turns(tokenizer):
    """Whether TRL can compute an assistant-only loss mask with this tokenizer's chat template."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return False
    if has_generation_markers(template):
        return True
    try:
        return get_training_chat_template(tokenizer) is not None
    except Exception:  # TRL knows no training variant of this template
        return False


def last_checkpoint(run_dir):
    """The newest complete checkpoint folder under ``run_dir/checkpoints``, or None.

    Trainer writes a checkpoint's trainer_state.json last, so a checkpoint counts only once that
    file parses: one torn by a kill in the middle of saving is passed over for the one before.
    """
    import json
    import os

    folder = os.path.join(str(run_dir), "checkpoints")
    steps = []
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        if name.startswith("checkpoint-") and name[len("checkpoint-"):].isdigit():
            steps.append(int(name[len("checkpoint-"):]))
    for step in sorted(steps, reverse=True):
        path = os.path.join(folder, f"checkpoint-{step}")
        try:
            with open(os.path.join(path, "trainer_state.json")) as f:
                json.load(f)
        except (OSError, ValueError):
            continue
        return path
    return None


def pin_4bit_layout(model):
    """Keep every bitsandbytes 4-bit layer of ``model`` in the standard NF4 layout, on any CPU.

    Why: on CPUs with AVX512-BF16, bitsandbytes (0.49+) repacks a ``Linear4bit`` weight into a
    CPU-only layout on its first forward in eval mode without grad (any generation) and keeps it
    so. Training, merging (dequantising) and narrow layers then read that layout as if it were
    NF4: the demo stops learning, merges come out garbage, a 32-wide layer crashes. So lora_nb
    (and its exported scripts) switch the repack off for every 4-bit layer (load, inject,
    load_adapter, generate, merge) and undo a repack already done with bitsandbytes' own
    inverse, so results do not depend on the CPU. Cost: inference on those CPUs takes the
    generic 4-bit kernel. A model without 4-bit layers is left alone. Returns ``model``.

    Example:
        >>> import torch, bitsandbytes as bnb
        >>> layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32)
        >>> pin_4bit_layout(torch.nn.Sequential(layer))[0].support_avx512bf16_for_cpu
        False
    """
    for module in model.modules():
        if not hasattr(module, "support_avx512bf16_for_cpu"):
            continue
        module.support_avx512bf16_for_cpu = False
        weight = module.weight
        state = getattr(weight, "quant_state", None)
        if getattr(state, "packing_format_for_cpu", False):
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            weight.data, weight.quant_state = _convert_weight_packed_for_cpu_inverse(weight.data, state)
    return model
