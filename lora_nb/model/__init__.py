"""The model steps: load, discover targets, estimate memory, suggest a recipe, inject LoRA, attach a
saved adapter.
"""
