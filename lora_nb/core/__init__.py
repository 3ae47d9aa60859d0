"""Support for every layer above: errors people read, files written whole, captured library noise,
progress bars, tables, charts, Ctrl-C handling, and ``lora-nb doctor``.
"""
