"""Sweeps: one recipe trained over a grid of settings, each point a fresh adapter on one loaded base.

``sweep(recipe, r=[4, 8, 16], targets=["attention", "all-linear"], seeds=2)`` trains every
combination (seeds outermost: a stopped sweep has covered the grid once before it repeats a seed).
The base model is loaded once; each point puts a fresh adapter on it — the previous one is removed,
the base weights stay as they were — so N points cost N training runs and one load.

Everything a sweep makes is in one folder (default ``runs/sweep-<date-time>``): a normal run folder
per point, named after its settings (``r4-attention-s0``), and ``sweep.json`` — the grid, the points
in order, each one's status and results — rewritten atomically after every point, so a killed sweep
still says what finished (:meth:`Sweep.load` reads it back). :meth:`Sweep.to_script` exports the
sweep as a standalone script: the single-run script's code, run once per point.

The modules, one concern each: ``grid`` (which settings a grid may vary, and the points' names),
``plan`` (the points and their recipes), ``base`` (the one loaded base and its weights between
points), ``runner`` (training the points in turn), ``store`` (``sweep.json``), ``ranking`` (the
results table and the best point), ``render`` (the table as text and HTML, the overlaid chart),
``sweep`` (:class:`~lora_nb.experiments.sweeps.sweep.Sweep` and :func:`~lora_nb.experiments.sweeps.sweep.sweep`).
"""
