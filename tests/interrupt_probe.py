"""Send this process a real SIGINT (what Ctrl-C and a kernel's interrupt send) the moment its main
thread enters a given function, and report how train() ended and what its folder holds.

Run by tests/test_interrupts.py in a fresh process:
    python interrupt_probe.py MODEL DATA OUT_DIR FILE_SUFFIX FUNCTION [RETRY_DATA]
(DATA "merge": merge the injected model into OUT_DIR instead; RETRY_DATA "merge": merge again.)

Prints one JSON line: when the signal was sent, how long the call took to end after it, how it
ended, the folder's files, and (with RETRY_DATA) how a second train() into the same folder went.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import lora_nb


def send_sigint_on_entry(suffix: str, function: str, sent: dict) -> None:
    """SIGINT this process the moment ``function`` of a file ending in ``suffix`` is called in the
    main thread (a profile hook sees every call: nothing is missed however short the phase).

    ``a>b`` (in both ``suffix`` and ``function``): once b is called inside a, e.g. datasets'
    fingerprinting inside TRL's tokenising rather than inside lora_nb's own conversion."""
    wanted = list(zip(suffix.split(">"), function.split(">")))
    inner_suffix, inner = wanted[-1]

    def running(frame, file_suffix: str, name: str) -> bool:
        while frame is not None:
            if frame.f_code.co_name == name and frame.f_code.co_filename.endswith(file_suffix):
                return True
            frame = frame.f_back
        return False

    def hook(frame, event, arg) -> None:
        if event != "call" or frame.f_code.co_name != inner or not frame.f_code.co_filename.endswith(inner_suffix):
            return
        if all(running(frame, s, f) for s, f in wanted[:-1]):
            sys.setprofile(None)
            sent["at"] = time.monotonic()
            os.kill(os.getpid(), signal.SIGINT)

    sys.setprofile(hook)


def main() -> None:
    # Ctrl-C as a notebook kernel or a terminal gets it: a test run started in the background (`cmd &`)
    # hands its children SIGINT ignored, and the probe would measure nothing
    signal.signal(signal.SIGINT, signal.default_int_handler)
    model_dir, data, out, suffix, function = sys.argv[1:6]
    retry = sys.argv[6] if len(sys.argv) > 6 else None
    model, tok = lora_nb.load(model_dir, dtype="fp32")
    model = lora_nb.inject(model, r=4, verbose=False)
    sent: dict = {}
    send_sigint_on_entry(suffix, function, sent)
    report: dict = {}
    try:
        if data == "merge":
            lora_nb.merge(model, out)
            report["outcome"] = "merged"
        else:
            run = lora_nb.train(model, tok, data, steps=40, batch_size=4, max_length=64, output_dir=out, progress=False)
            report["outcome"] = run.status
    except KeyboardInterrupt:
        report["outcome"] = "KeyboardInterrupt"
    ended = time.monotonic()
    report["signalled"] = "at" in sent
    report["seconds_to_end"] = round(ended - sent["at"], 2) if "at" in sent else None
    report["files"] = sorted(os.listdir(out)) if os.path.isdir(out) else None
    report["beside"] = sorted(os.listdir(os.path.dirname(os.path.abspath(out))))
    if retry == "merge":
        lora_nb.merge(model, out)
        report["retry"] = "merged" if os.path.isfile(os.path.join(out, "model.safetensors")) else "nothing"
    elif retry:
        again = lora_nb.train(model, tok, retry, steps=1, batch_size=4, max_length=64, output_dir=out, progress=False)
        report["retry"] = again.status
    print("REPORT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
