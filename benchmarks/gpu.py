"""GPU training benchmark: Keras on the torch backend vs PyTorch, no TensorFlow needed.

    pip install keras torch numpy            # + this repo on PYTHONPATH (or pip install -e . --no-deps)
    KERAS_BACKEND=torch python -m benchmarks.gpu               # full: batch 100, gru1+gru4, 16+8 kHz
    KERAS_BACKEND=torch python -m benchmarks.gpu --small       # tiny CPU smoke test

Columns: Keras/torch fp32, Keras/torch mixed_bfloat16 (cuDNN GRU path: Keras 3 defaults),
PyTorch fp32, PyTorch bf16 autocast (AMP); plus Keras/TensorFlow in a subprocess when
TensorFlow with a GPU is installed.  Clips/s are medians of alternating rounds on in-memory
random clips; "epoch s" projects one epoch of the 84,843-clip training split (the study:
~1,026 s for 10 epochs of gru1 @ 16 kHz on a Colab GPU = ~830 clips/s).  Without CUDA it
runs on CPU (that is what the tests exercise).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from . import common  # noqa: E402
from kws_tf import cli  # noqa: E402

STUDY_GPU_CLIPS_PER_S = 84_843 * 10 / 1026  # gru1 @ 16 kHz, Colab GPU


def _tf_gpu_column(cfg):
    """Keras on TensorFlow in a child process (the backend is fixed per process)."""
    code = ("import json,sys,os; os.environ['KERAS_BACKEND']='tensorflow';"
            "import tensorflow as tf; assert tf.config.list_physical_devices('GPU');"
            "from benchmarks.common import KerasTrainer;"
            "c=json.loads(sys.argv[1]); r=c.pop('rounds'); t=KerasTrainer(**c); t.run();"
            "print('@@'+json.dumps([t.batch*t.steps/t.run() for _ in range(r)]))")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    try:
        out = subprocess.run([sys.executable, "-c", code, json.dumps(cfg)], env=env,
                             capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return None, "timeout"
    for line in out.stdout.splitlines():
        if line.startswith("@@"):
            return json.loads(line[2:]), None
    return None, (out.stderr.strip().splitlines() or ["no TensorFlow"])[-1][:200]


def main(argv=None):
    ap = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--small", action="store_true",
                    help="CPU smoke test: batch 4, 4 kHz-sized work, 1 round")
    ap.add_argument("--variants", default="gru1,gru4")
    ap.add_argument("--rates", default="16000,8000")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-tf", action="store_true", help="skip the Keras/TensorFlow column")
    ap.add_argument("--out", default=None, help="write results JSON here")
    args = ap.parse_args(argv)

    import keras
    import torch
    if keras.backend.backend() != "torch":
        raise SystemExit("run with KERAS_BACKEND=torch")
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if args.small:
        args.batch, args.steps, args.rounds = 4, 1, 1
        args.variants, args.rates = args.variants.split(",")[0], "8000"
    dev_name = torch.cuda.get_device_name(0) if cuda else f"CPU ({common.cpu_peak()['model_name']})"
    bf16_ok = (torch.cuda.is_bf16_supported() if cuda else True)
    print(f"device: {dev_name}; torch {torch.__version__}, keras {keras.__version__}"
          + ("" if cuda else "  -- no CUDA: CPU fallback, figures are NOT GPU figures"))
    if cuda:
        torch.backends.cudnn.benchmark = True

    columns = {
        "keras-torch fp32": lambda c: common.KerasTrainer(**c),
        "keras-torch bf16": lambda c: common.KerasTrainer(**c, mixed_precision="mixed_bfloat16"),
        "torch fp32": lambda c: common.TorchTrainer(**c, device=device),
        "torch AMP bf16": lambda c: common.TorchTrainer(**c, device=device, amp=True),
    }
    if not bf16_ok:
        columns.pop("keras-torch bf16"); columns.pop("torch AMP bf16")
    rows = []
    for variant in args.variants.split(","):
        for rate in map(int, args.rates.split(",")):
            cfg = {"variant": variant, "sample_rate": rate,
                   "input_rate": 16000 if rate != 16000 else None,
                   "batch": args.batch, "steps": args.steps}
            samples = _measure_cell(columns, cfg, args.rounds)
            if cuda and not args.no_tf:
                tf_cps, err = _tf_gpu_column({**cfg, "rounds": args.rounds})
                samples["keras-tf fp32"] = tf_cps if tf_cps else f"skipped: {err}"
            rows += _cell_rows(variant, rate, samples, args.batch, dev_name)
    print(f"(study: gru1@16kHz ~{STUDY_GPU_CLIPS_PER_S:.0f} clips/s, "
          f"{common.TRAIN_SPLIT_CLIPS / STUDY_GPU_CLIPS_PER_S:.0f} s/epoch on a Colab GPU)")
    result = {"device": dev_name, "cuda": cuda, "torch": torch.__version__,
              "keras": keras.__version__, "rows": rows,
              "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


def _measure_cell(columns: dict, cfg: dict, rounds: int) -> dict:
    """Clips/s of each column, ``rounds`` times, alternating columns round by round (or why a
    column failed)."""
    trainers, samples = {}, {}
    for name, make in columns.items():
        try:
            trainers[name] = make(dict(cfg))
            trainers[name].run()  # warm-up (cuDNN autotune, allocator)
        except Exception as e:  # noqa: BLE001 - report and continue
            samples[name] = f"failed: {type(e).__name__}: {str(e)[:150]}"
    for _ in range(rounds):
        for name, t in trainers.items():
            samples.setdefault(name, []).append(t.batch * t.steps / t.run())
    return samples


def _cell_rows(variant: str, rate: int, samples: dict, batch: int, dev_name: str) -> list:
    """One result row per column, printed as one line for the cell."""
    rows, line = [], f"{variant}@{rate // 1000}kHz:"
    for name, s in samples.items():
        row = {"variant": variant, "sample_rate": rate, "column": name, "batch": batch,
               "device": dev_name}
        if isinstance(s, str):
            row["error"] = s
            line += f"  {name}: {s}"
        else:
            cps = statistics.median(s)
            row.update(clips_per_s=round(cps, 1), rounds=[round(v, 1) for v in s],
                       epoch_s=round(common.TRAIN_SPLIT_CLIPS / cps, 1))
            line += f"  {name}: {cps:.0f}/s ({row['epoch_s']:.0f} s/epoch)"
        rows.append(row)
    print(line, flush=True)
    return rows


if __name__ == "__main__":
    main()
