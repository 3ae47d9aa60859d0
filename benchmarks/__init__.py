"""lora_nb's benchmark suite: ``python -m benchmarks [--quick] [--cases a,b] [--out DIR]``.

Each case compares two sides run alternately in one process run and reports their ratio (see
:mod:`benchmarks.common`); the cases live in :mod:`benchmarks.cases`, one module each. Results go
to ``results.md`` and ``results.json`` (in ``benchmarks/`` unless ``--out``), and the table is
printed for the README's Performance section. ``--quick`` runs every case at tiny sizes (a few
minutes: it checks the suite works; its ratios mean little). The GPU check is separate
(``gpu.sh``, ``GPU.md``).
"""
