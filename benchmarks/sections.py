"""The in-process sections of the CPU benchmark (inference latency and throughput, the input
pipeline), each run in a fresh interpreter so that the training workers' settings and
TensorFlow's state do not leak into them."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from . import common

ROOT = Path(__file__).resolve().parents[1]


def section_subprocess(section, quick: bool):
    """Run an in-process TF section in a fresh interpreter, return its JSON."""
    cmd = [sys.executable, "-m", "benchmarks.run", "--_section", section]
    if quick:
        cmd.append("--quick")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "tensorflow",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("@@"):
            return json.loads(line[2:])
    return {"error": out.stderr[-2000:]}


def _median_time(fn, n):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _error(e: Exception) -> dict:
    return {"error": f"{type(e).__name__}: {str(e)[:300]}"}


class _Timings(dict):
    """Batch-1 latency and batch throughput per way of running the model; a way that fails
    records why, and the others go on."""

    def __init__(self, x1, xb, n1, nb, **fields):
        super().__init__(**fields)
        self.x1, self.xb, self.n1, self.nb = x1, xb, n1, nb

    def record(self, name, run):
        """``run(x)`` on one clip and on the whole batch (after a warm-up / trace of each)."""
        try:
            f1, fb = (lambda: run(self.x1)), (lambda: run(self.xb))
            f1(), fb()
            self[name] = {"latency_ms_batch1": round(_median_time(f1, self.n1) * 1e3, 2),
                          "clips_per_s_batch": round(len(self.xb) / _median_time(fb, self.nb), 1)}
        except Exception as e:  # record why, keep going
            self[name] = _error(e)


def run_inference(quick):
    from kws_tf import build_model

    n1, nb, big = (10, 2, 32) if quick else (30, 3, 100)
    model = build_model("gru4", 16000)
    x1, _ = common.random_batch(1, 16000)
    xb, _ = common.random_batch(big, 16000)
    res = _Timings(x1, xb, n1, nb, variant="gru4", sample_rate=16000, batch=big)
    _keras_inference(res, model)
    _tflite_inference(res, model)
    _torch_inference(res, model, quick)
    return dict(res)


def _keras_inference(res: _Timings, model) -> None:
    import tempfile

    import tensorflow as tf

    res.record("keras (model.predict_on_batch)", model.predict_on_batch)
    serve = tf.function(lambda x: model(x, training=False), jit_compile=True)
    res.record("keras tf.function+XLA", lambda x: serve(x).numpy())
    tmp = Path(tempfile.mkdtemp())
    try:
        model.export(str(tmp / "sm"), verbose=False)
        sm = tf.saved_model.load(str(tmp / "sm"))
        res.record("SavedModel serve", lambda x: sm.serve(x).numpy())
    except Exception as e:
        res["SavedModel serve"] = _error(e)


def _tflite_inference(res: _Timings, model) -> None:
    # The export path's TFLite files (batch 1, unrolled GRU, builtin ops): a plain Keras GRU
    # only converts with Flex ops.  Batch throughput is the interpreter run clip by clip.
    from kws_tf.export import convert_tflite
    from kws_tf.inference.tflite import TFLiteModel

    for name, quant in (("TFLite float32", "none"), ("TFLite dynamic range", "dynamic"),
                        ("TFLite int8", "int8")):
        try:
            blob, _ = convert_tflite(model, quant, res.xb[:16])
            lite = TFLiteModel(blob, num_threads=os.cpu_count())
            res.record(name, lite.probabilities)
            res[name]["size_kb"] = round(len(blob) / 1024)
        except Exception as e:
            res[name] = _error(e)


def _torch_inference(res: _Timings, model, quick) -> None:
    from .columns import TORCH_MISSING, torch_installed

    if not torch_installed():
        res["torch eager"] = {"error": TORCH_MISSING}
        return
    import torch

    from .torch_reference import TorchKWS, copy_from_keras

    tm = copy_from_keras(TorchKWS("gru4", 16000), model).eval()
    res.x1, res.xb = torch.tensor(res.x1), torch.tensor(res.xb)
    with torch.inference_mode():
        res.record("torch eager", tm)
        try:
            res.record("torch.jit.trace", torch.jit.trace(tm, res.x1))
        except Exception as e:
            res["torch.jit.trace"] = _error(e)
    if not quick:
        try:
            comp = torch.compile(tm)
            with torch.inference_mode():
                res.record("torch.compile", comp)
        except Exception as e:
            res["torch.compile"] = _error(e)


def _drain(ds, max_batches=10 ** 9):
    """Clips per second of one pass over ``ds`` (at most ``max_batches`` batches)."""
    n, t0 = 0, time.perf_counter()
    for i, (xb, *_) in enumerate(ds):
        n += int(xb.shape[0])
        if i + 1 >= max_batches:
            break
    return n / (time.perf_counter() - t0)


def _cached(ds) -> float:
    """The median of three passes over an already warmed ``ds``."""
    return round(statistics.median(_drain(ds) for _ in range(3)), 1)


def run_pipeline(quick):
    """Data pipeline clips/s: kws_tf.data on the real subset if present, else tf.data on arrays."""
    import tensorflow as tf

    res = {}
    subset = ROOT.parent / "shared" / "data" / "speech_commands_subset"
    batch = 100
    try:
        from kws_tf import data as kdata
        ds = kdata.make_dataset(str(subset), "train", 16000, batch)
        first = _drain(ds)
        res["kws_tf.data.make_dataset(train, 16 kHz)"] = {
            "first_pass_clips_per_s": round(first, 1), "cached_clips_per_s": _cached(ds)}
    except Exception as e:
        res["kws_tf.data.make_dataset"] = _error(e)
    x, y = common.random_batch(2000 if quick else 8000, 16000)
    ds = (tf.data.Dataset.from_tensor_slices((x, y)).cache().shuffle(2000)
          .batch(batch).prefetch(tf.data.AUTOTUNE))
    _drain(ds)
    res["tf.data on in-memory arrays (cache+shuffle+batch+prefetch)"] = {
        "cached_clips_per_s": _cached(ds)}
    from kws_tf import Resample
    rs = Resample(16000, 8000)
    ds8 = ds.map(lambda a, b: (rs(a), b), num_parallel_calls=tf.data.AUTOTUNE)
    _drain(ds8)
    res["same + Resample(16000->8000) in map"] = {"cached_clips_per_s": _cached(ds8)}
    return res


SECTIONS = {"inference": run_inference, "pipeline": run_pipeline}
