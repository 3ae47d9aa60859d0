"""The recipe as a standalone script (``train_lora.py``) and the ``accelerate launch`` configuration.
"""
