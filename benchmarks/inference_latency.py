"""python -m benchmarks.inference_latency: single-clip latency and size of every export format.

For each sample rate, a model (``--model RATE=PATH.keras``, or the study's ``--variant`` built
with random weights: latency and size do not depend on the weights) is exported to a temporary
folder (SavedModel, TFLite float32 / dynamic / int8 / int16x8; int8 calibrated on real clips when
``--data`` is given, else on noise) and each format labels one 1 s clip at a time:
Keras ``predict_on_batch``, the SavedModel's serving signature, the LiteRT interpreter.
Prints median and p95 latency in ms and the size on disk; ``--json`` writes them to a file.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from .common import latency_ms
from kws_tf import cli


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def bench_rate(rate: int, model_path, variant: str, data_root, repeats: int, threads: int) -> dict:
    import keras

    from kws_tf import artifacts, build_model
    from kws_tf.export import SavedModelRunner, convert_tflite, export_savedmodel
    from kws_tf.inference.tflite import TFLiteModel

    if model_path:
        model, info = artifacts.load_model(model_path, compile=False)
        labels = info["labels"]
    else:
        keras.utils.set_random_seed(0)
        model = build_model(variant, rate)
        labels = [f"w{i}" for i in range(model.output_shape[-1])]
    rate = int(model.input_shape[-1])
    rng = np.random.default_rng(0)
    if data_root:
        from kws_tf.export import load_export_data

        data = load_export_data(data_root, labels if model_path else _subset_labels(data_root, labels),
                                rate, calibration_clips=100, eval_clips=20)
        calibration, clip = data.calibration, data.audio[:1]
    else:
        calibration = rng.uniform(-0.3, 0.3, (20, rate)).astype(np.float32)
        clip = rng.uniform(-0.3, 0.3, (1, rate)).astype(np.float32)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="kws-bench-") as tmp:
        tmp = Path(tmp)
        keras_file = tmp / "model.keras"
        model.save(keras_file)
        rows["keras"] = {"size_bytes": _size(keras_file),
                         **latency_ms(lambda: model.predict_on_batch(clip), repeats, warmup=5)}
        sm = export_savedmodel(model, labels, tmp / "savedmodel")
        runner = SavedModelRunner(sm)
        rows["savedmodel"] = {"size_bytes": _size(sm), **latency_ms(lambda: runner(clip), repeats, warmup=5)}
        for q, name in (("none", "tflite_float32"), ("dynamic", "tflite_dynamic"), ("int8", "tflite_int8"),
                        ("int16x8", "tflite_int16x8")):
            content, _ = convert_tflite(model, q, calibration)
            lite = TFLiteModel(content, num_threads=threads)
            rows[name] = {"size_bytes": len(content), **latency_ms(lambda: lite.probabilities(clip), repeats, warmup=5)}
    return rows


def _subset_labels(root, labels):
    """A random-weight 35-class model gets the dataset's own labels (for picking real clips)."""
    from kws_tf.data import load_splits

    words, _ = load_splits(root)
    return words[:len(labels)]


def main(argv=None) -> int:
    p = cli.ArgumentParser(prog="python -m benchmarks.inference_latency", description=cli.first_paragraph(__doc__))
    p.add_argument("--variant", default="gru1", help="study variant to build when no --model (default gru1)")
    p.add_argument("--model", action="append", default=[], metavar="RATE=PATH",
                   help="a trained model.keras for a rate, e.g. 8000=runs/x/model.keras (repeatable)")
    p.add_argument("--rates", default="16000,8000")
    p.add_argument("--data", help="dataset folder for real clips (int8 calibration, timed clip)")
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--threads", type=int, default=1,
                   help="threads for TensorFlow and the TFLite interpreter (default 1)")
    p.add_argument("--json", dest="json_out", help="write the results to this JSON file")
    args = p.parse_args(argv)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from kws_tf.platform.machine import cpu_model

    models = dict(m.split("=", 1) for m in args.model)
    results = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": args.threads,
               "tensorflow": tf.__version__, "variant": None if models else args.variant, "rates": {}}
    print(f"single-clip latency, {args.threads} thread(s), {results['cpu']} ({os.cpu_count()} cores), "
          f"TensorFlow {tf.__version__}")
    for rate in [int(r) for r in args.rates.split(",")]:
        rows = bench_rate(rate, models.get(str(rate)), args.variant, args.data, args.repeats, args.threads)
        results["rates"][rate] = rows
        what = models.get(str(rate)) or f"{args.variant} (random weights)"
        print(f"\n{rate // 1000} kHz, {what}")
        print(f"  {'format':16s} {'size':>10s} {'median':>9s} {'p95':>9s}")
        for name, r in rows.items():
            print(f"  {name:16s} {r['size_bytes'] / 1e6:8.2f}MB {r['median_ms']:7.2f}ms {r['p95_ms']:7.2f}ms")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
