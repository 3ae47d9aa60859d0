# The template of every sweep script lora_nb.export.script renders (these comment lines are left out).
# Valid Python that linters check; lora_nb never runs it. Rendered, it becomes one module: this
# docstring, the imports both templates use, the first point's settings (script_main.py's names) with
# SWEEP_DIR and POINTS (each point's label and the settings that differ between points) in the settings
# block, sweep() below, script_main.py's main() and the rest of its code (without its entry point),
# the lora_nb.hf helpers they call, and the entry point below. No setting is ever written here.
"""A LoRA sweep exported by lora_nb {version}: one recipe trained once per point of a grid.

Standalone: needs torch, transformers, peft, trl and datasets (not lora_nb). Each point runs the
single-run code, main(), with its own constants from POINTS, into its own folder.

    python sweep_lora.py                          # every point, into SWEEP_DIR/<label>
    python sweep_lora.py --output-dir NEW         # into NEW/<label>
    accelerate launch sweep_lora.py [...]         # multi-GPU / multi-node, unchanged

It never writes into a point's folder that already holds files unless --overwrite is given.
"""
from __future__ import annotations

import argparse
import os
import sys

from lora_nb.export.script_main import main

# --- settings: the recipe's, as lora_nb export wrote them ---
SWEEP_DIR = "sweep-script"
POINTS: list[tuple[str, dict]] = [("r4", {"LORA_CONFIG": {"r": 4}}), ("r8", {"LORA_CONFIG": {"r": 8}})]
# --- end of settings ---


def sweep() -> None:
    """Train every point of POINTS in turn: main() with the point's constants, into its own folder."""
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--output-dir", default=SWEEP_DIR,
                     help="the folder for the points' run folders (default: SWEEP_DIR)")
    cli.add_argument("--overwrite", action="store_true", help="write into point folders that already hold files")
    opts = cli.parse_args()
    program = sys.argv[0]
    for number, (label, constants) in enumerate(POINTS, 1):
        print(f"== sweep point {number}/{len(POINTS)}: {label}", flush=True)
        globals().update(constants)  # this point's LORA_CONFIG, SFT_CONFIG, SEED, ...: literals, as above
        overwrite = ["--overwrite"] if opts.overwrite else []
        sys.argv = [program, "--output-dir", os.path.join(opts.output_dir, label), *overwrite]
        main()


if __name__ == "__main__":
    sweep()
