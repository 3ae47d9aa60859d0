"""What the live chart costs: the same QLoRA run with and without it, side by side.

    python benchmarks/live_chart.py [--steps 200]

Runs A (no chart), B (LiveChart), A, B on the demo model and prints each run's training time,
the chart's own drawing time and the relative slowdown. Numbers on a loaded machine are noisy:
compare the runs of one invocation only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lora_nb
from lora_nb.demo import write_data
from lora_nb.notebook.live import LiveChart
from lora_nb.tiny import tiny_model


class NullView:
    """Draws nothing on screen; the chart still renders its PNG, which is the cost measured."""

    def show(self, png: bytes, status: str) -> None:
        pass


def one_run(folder: Path, data: Path, steps: int, chart: LiveChart | None) -> float:
    model, tok = lora_nb.load(str(tiny_model("llama", "demo")), quant="4bit")
    model = lora_nb.inject(model, r=16, dropout=0.0, verbose=False)
    start = time.perf_counter()
    lora_nb.train(model, tok, str(data), steps=steps, lr=2e-3, batch_size=16, max_length=64,
                  output_dir=str(folder), progress=False, callbacks=[chart] if chart else [])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data, _ = write_data(Path(tmp) / "data")
        plain, charted, drawing, redraws = [], [], [], 0
        for i in range(2):
            plain.append(one_run(Path(tmp) / f"plain{i}", data, args.steps, None))
            chart = LiveChart(view=NullView())
            charted.append(one_run(Path(tmp) / f"chart{i}", data, args.steps, chart))
            drawing.append(chart.render_seconds)
            redraws += chart.redraws
    a, b = sum(plain) / 2, sum(charted) / 2
    print(f"without chart: {a:.1f} s; with chart: {b:.1f} s ({100 * (b - a) / a:+.1f}%); "
          f"drawing: {sum(drawing) / 2:.2f} s = {100 * sum(drawing) / sum(charted):.2f}% of the run; "
          f"{redraws / 2:.0f} image redraws per run of {args.steps} steps")


if __name__ == "__main__":
    main()
