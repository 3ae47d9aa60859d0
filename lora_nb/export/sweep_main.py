# The fixed code of every sweep script lora_nb.export.script renders (these comment lines are left out).
# It is read as text, never imported by lora_nb: the script is this docstring, script_main.py's
# imports (and any below it lacks), the first point's settings as NAME = <literal> lines plus
# SWEEP_DIR and POINTS (each point's label and the constants that differ between points), then
# lora_nb.hf's shared modules, script_main.py's code (its main() trains one run), and the code
# below. No setting is ever written here.
"""A LoRA sweep exported by lora_nb {version}: one recipe trained once per point of a grid.

Standalone: needs torch, transformers, peft, trl and datasets (not lora_nb). Each point runs the
single-run code, main(), with its own constants from POINTS, into its own folder.

    python sweep_lora.py                          # every point, into SWEEP_DIR/<label>
    python sweep_lora.py --output-dir NEW         # into NEW/<label>
    accelerate launch sweep_lora.py [...]         # multi-GPU / multi-node, unchanged

It never writes into a point's folder that already holds files unless --overwrite is given.
"""
import argparse
import os
import sys


def sweep():
    """Train every point of POINTS in turn: main() with the point's constants, into its own folder."""
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--output-dir", default=SWEEP_DIR, help="the folder for the points' run folders (default: SWEEP_DIR)")
    cli.add_argument("--overwrite", action="store_true", help="write into point folders that already hold files")
    opts = cli.parse_args()
    program = sys.argv[0]
    for number, (label, constants) in enumerate(POINTS, 1):
        print(f"== sweep point {number}/{len(POINTS)}: {label}", flush=True)
        globals().update(constants)  # this point's LORA_CONFIG, SFT_CONFIG, SEED, ...: literals, as above
        sys.argv = [program, "--output-dir", os.path.join(opts.output_dir, label), *(["--overwrite"] if opts.overwrite else [])]
        main()


if __name__ == "__main__":
    sweep()
