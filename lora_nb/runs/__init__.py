"""Runs as records: a run's folder, status, history and adapter, and the runs side by side.

The modules, one concern each: ``record`` (:class:`~lora_nb.runs.record.Run`), ``background``
(the thread a run or a sweep trains in: start, stop, wait, on_done), ``busy`` (which models are
training, and the one refusal for touching one), ``history`` (the metrics a run logs, read back),
``labels`` (settings as a few characters: ``r16-attention-lr2e-4``), ``processes`` (whether the
process that wrote a folder still runs), ``folders`` (which folder a run takes), ``find`` (every
run under a folder, filtered), ``table`` (runs side by side), ``adapters`` (adapter folders),
``provenance`` (how a model was loaded and adapted).
"""
