"""The training step: TRL's SFTTrainer with lora_nb's settings, checks, callbacks and run folders.
"""
