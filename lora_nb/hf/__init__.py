"""The plain Hugging Face code lora_nb and its exported scripts share: dtype and device, model loading,
data formats, the memory of a step, run folders, and every branch on a library's version (``compat``).

Layer 1 of docs/architecture.md: imports nothing from lora_nb, so :mod:`lora_nb.export.script` can copy it
into a standalone script.
"""
