"""python -m kws_tf.export MODEL.keras: SavedModel and TFLite (float32, dynamic-range, int8).

Every export takes raw audio at the model's sample rate, float32 in [-1, 1], and returns
softmax probabilities (also for the log_softmax variants), so all formats answer the same
question in the same units.  The output folder (default ``saved_models/<run name>/``) holds::

    savedmodel/             tf.saved_model.load / TF Serving; signature "serving_default":
                            audio (batch, samples) -> probabilities (batch, classes), label (batch,)
    model_float32.tflite    builtin ops only, batch 1
    model_dynamic.tflite    dynamic-range quantized weights (int8), float activations
    model_int8.tflite       full-integer: int8 weights and activations, float32 in/out
    labels.txt              one label per line, in output order
    model_card.json         variant, rate, labels, shapes, run accuracy, per-export checks

TFLite: Keras 3's GRU becomes a while loop over TensorList ops, which TFLite only runs with
Flex (SELECT_TF_OPS).  The export rebuilds the same architecture with a fixed batch of 1 and
``unroll=True`` (one cell per time step: FULLY_CONNECTED/LOGISTIC/TANH/MUL/ADD builtins),
copies the weights, and checks the flatbuffer's op list: a Flex or custom op is an error.

Checks made on every export (an error stops it): SavedModel and float TFLite probabilities
equal the Keras model's to <= 1e-4 on real clips, with the same argmax; quantized models'
accuracy on the evaluation split is printed next to the float one (a drop of more than
``--max-drop`` points is reported as a warning and recorded in the model card).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from . import cli
from .errors import ExportError  # noqa: F401  (re-exported)
from .inference.scorers import SavedModelRunner  # noqa: F401  (re-exported)
from .metrics import softmax  # noqa: F401  (re-exported)

PARITY_ATOL = 1e-4
TFLITE_FILES = {"none": "model_float32.tflite", "dynamic": "model_dynamic.tflite",
                "int8": "model_int8.tflite", "int16x8": "model_int16x8.tflite"}
QUANTIZE_CHOICES = ("none", "dynamic", "int8", "int16x8")
# "all" leaves int16x8 out: its TFLite kernels are reference ones, ~10x slower than int8.
QUANTIZE_ALL = ("dynamic", "int8")


@dataclasses.dataclass
class ExportData:
    """Real clips for an export: calibration (int8) and evaluation/parity, at the model's rate."""

    calibration: np.ndarray  # (n, samples) float32, from the training split
    audio: np.ndarray  # (m, samples) float32, evaluation split
    labels: np.ndarray  # (m,) int: indices into the model's labels
    split: str = "validation"
    source: Optional[str] = None


# ----------------------------------------------------------------------------- helpers
def keras_probabilities(model, audio, batch_size: int = 64) -> np.ndarray:
    """The Keras model's softmax probabilities (softmax of log-probabilities = probabilities)."""
    return softmax(model.predict(np.asarray(audio, np.float32), batch_size=batch_size, verbose=0))


def run_name(model_path) -> str:
    """``runs/gru1-16k-2026.../model.keras`` -> ``gru1-16k-2026...``; other files: their stem."""
    p = Path(model_path).resolve()
    return p.parent.name if p.name == "model.keras" else p.stem


def inference_model(model, batch_size: Optional[int] = None, unroll: bool = False):
    """The same architecture and weights, with a fixed batch size and/or unrolled GRUs."""
    import keras

    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer" and batch_size is not None:
            shape = layer["config"].get("batch_shape") or layer["config"].get("batch_input_shape")
            layer["config"]["batch_shape"] = [batch_size] + list(shape[1:])
            layer["config"].pop("batch_input_shape", None)
        if layer["class_name"] in ("GRU", "LSTM", "SimpleRNN") and unroll:
            layer["config"]["unroll"] = True
    clone = keras.Model.from_config(config)
    clone.set_weights(model.get_weights())
    return clone


def _probability_fn(model):
    import tensorflow as tf

    def probabilities(audio):
        # softmax(log_softmax(z)) == softmax(z): the same probabilities for both heads
        return tf.nn.softmax(model(audio, training=False), axis=-1)

    return probabilities


# ----------------------------------------------------------------------------- SavedModel
def export_savedmodel(model, labels: Sequence[str], dest) -> Path:
    """A SavedModel whose serving signature maps audio (batch, samples) to probabilities + label."""
    import keras
    import tensorflow as tf

    samples = int(model.input_shape[-1])
    probabilities = _probability_fn(model)
    label_table = tf.constant(list(labels))

    def serve(audio):
        p = probabilities(audio)
        return {"probabilities": p, "label": tf.gather(label_table, tf.argmax(p, axis=-1))}

    def build(folder: Path):
        archive = keras.export.ExportArchive()
        archive.track(model)
        # The first endpoint is also published as "serving_default" (TF Serving's default).
        archive.add_endpoint("serve", serve,
                             input_signature=[tf.TensorSpec((None, samples), tf.float32, name="audio")])
        archive.write_out(str(folder), verbose=False)

    from . import artifacts

    dest = Path(dest)
    artifacts.atomic_dir(build, dest)
    return dest


# ----------------------------------------------------------------------------- TFLite
def convert_tflite(model, quantize: str = "none", calibration: Optional[np.ndarray] = None) -> tuple:
    """``(flatbuffer bytes, notes dict)`` for ``model``: batch 1, unrolled GRU, builtins only.

    ``quantize``: "none" (float32), "dynamic" (int8 weights, float activations) or "int8"
    (int8 weights and activations, calibrated on ``calibration`` clips; float32 in/out) or
    "int16x8" (int8 weights, int16 activations, calibrated the same way: the accuracy of float
    at the size of int8, but TFLite runs it with slow reference kernels).
    """
    from .inference import tflite

    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}")
    if quantize in ("int8", "int16x8") and (calibration is None or len(calibration) == 0):
        raise ValueError(f"{quantize} quantization needs calibration clips from the training split")
    lite = inference_model(model, batch_size=1, unroll=True)
    with tempfile.TemporaryDirectory(prefix="kws-tflite-") as tmp:
        _write_serving_archive(lite, tmp)
        content, notes = _convert(tmp, quantize, calibration)
    notes["ops"] = tflite.check_builtin_only(content, f"the {quantize} TFLite model")
    if quantize in ("int8", "int16x8"):
        floats = tflite.float_ops(content)
        notes["float_ops"] = floats
        notes["float_ops_note"] = (
            f"none: every op runs in {quantize} (QUANTIZE/DEQUANTIZE only convert the float32 input "
            "and output)" if not floats else
            f"{sum(floats.values())} op(s) stay float32 ({', '.join(floats)}): the converter "
            "has no integer kernel or calibration range for them; they run as float between "
            "DEQUANTIZE/QUANTIZE pairs")
    return content, notes


def _write_serving_archive(lite, folder) -> None:
    """The batch-1 model as a SavedModel with one "serve" endpoint: the converter's input."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(lite)
    archive.add_endpoint("serve", _probability_fn(lite), input_signature=[
        tf.TensorSpec((1, int(lite.input_shape[-1])), tf.float32, name="audio")])
    archive.write_out(folder, verbose=False)


def _convert(saved_model: str, quantize: str, calibration) -> tuple:
    """Run the TFLite converter on builtin op sets only (never SELECT_TF_OPS)."""
    import tensorflow as tf

    from .platform.quiet import native_output_muted

    def convert(ops):
        c = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=["serve"])
        c.target_spec.supported_ops = ops
        if quantize != "none":
            c.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize in ("int8", "int16x8"):
            clips = np.asarray(calibration, np.float32)
            c.representative_dataset = lambda: ([clip[None]] for clip in clips)
        with native_output_muted():  # the calibrator prints C++ lines on stdout
            return c.convert()

    builtins = tf.lite.OpsSet.TFLITE_BUILTINS
    if quantize == "int16x8":
        # Float builtins as fallback: 16x8 has no kernel for some ops (LOG_SOFTMAX).
        return (convert([tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
                         builtins]),
                {"int16x8_mode": "int16 activations, int8 weights; float32 builtins where 16x8 "
                                 "has no kernel"})
    if quantize != "int8":
        return convert([builtins]), {}
    try:
        return (convert([tf.lite.OpsSet.TFLITE_BUILTINS_INT8]),
                {"int8_mode": "full integer (TFLITE_BUILTINS_INT8)"})
    except Exception as e:  # noqa: BLE001 - the converter raises many kinds
        # Some TF versions cannot integer-quantize every op of the unrolled GRU:
        # keep those ops in float (builtins still) and say which they are.
        mode = ("mixed: TFLITE_BUILTINS_INT8 + TFLITE_BUILTINS float fallback "
                f"(strict int8 failed: {str(e).splitlines()[0][:200]})")
        return convert([tf.lite.OpsSet.TFLITE_BUILTINS_INT8, builtins]), {"int8_mode": mode}


# ----------------------------------------------------------------------------- data
def load_export_data(root, labels: Sequence[str], sample_rate: int, split: str = "validation",
                     calibration_clips: int = 200, eval_clips: int = 1000,
                     seed: int = 0, cache_dir=None, on_error: str = "raise") -> ExportData:
    """Seeded samples of real clips: calibration from the training split, evaluation from ``split``.

    Clips of words the model does not know are left out.  Read from the decoded cache (built on
    first use) exactly like training: 16 kHz int16, padded/cropped to 1 s, resampled for 8 kHz.
    """
    from .data import open_decoded, stream_batches

    decoded = open_decoded(root, cache_dir=cache_dir, on_error=on_error)
    known = {w: i for i, w in enumerate(labels)}
    rng = np.random.default_rng(seed)

    def pick(part, n):
        rows = [i for i, f in enumerate(part.files) if f.split("/")[0] in known]
        if n and len(rows) > n:
            rows = [rows[i] for i in sorted(rng.choice(len(rows), n, replace=False))]
        return np.asarray(rows, np.int64)

    def decode(part, rows):
        if not len(rows):
            return np.zeros((0, sample_rate), np.float32)
        return np.concatenate([x for x, _ in stream_batches(part, rows, 256, sample_rate)
                               .as_numpy_iterator()])

    cal_rows = pick(decoded["training"], calibration_clips)
    eval_rows = pick(decoded[split], eval_clips)
    if not len(eval_rows):
        raise ValueError(f"{root}: no {split} clips of the model's words "
                         f"({', '.join(list(labels)[:5])}...)")
    y = np.array([known[decoded[split].files[i].split("/")[0]] for i in eval_rows], np.int64)
    return ExportData(decode(decoded["training"], cal_rows), decode(decoded[split], eval_rows),
                      y, split, str(root))


# ----------------------------------------------------------------------------- export
def check_parity(reference: np.ndarray, probs: np.ndarray, what: str, atol: float = PARITY_ATOL) -> dict:
    diff = float(np.max(np.abs(reference - probs)))
    same = bool(np.array_equal(reference.argmax(-1), probs.argmax(-1)))
    if diff > atol or not same:
        n_diff = int((reference.argmax(-1) != probs.argmax(-1)).sum())
        raise ExportError(f"{what} does not match the Keras model: max |diff| {diff:.3g} "
                          f"(limit {atol:g}), {n_diff} of {len(probs)} top-1 labels differ")
    return {"clips": int(len(probs)), "max_abs_diff": diff, "same_top1": same}


def _versions() -> dict:
    import keras
    import tensorflow as tf

    from . import __version__

    out = {"kws_tf": __version__, "tensorflow": tf.__version__, "keras": keras.__version__}
    try:
        from importlib.metadata import version

        out["ai_edge_litert"] = version("ai-edge-litert")
    except Exception:  # noqa: BLE001
        out["ai_edge_litert"] = None
    return out


def _run_accuracy(model_path) -> dict:
    metrics = Path(model_path).resolve().parent / "metrics.json"
    if not metrics.is_file():
        return {}
    try:
        m = json.loads(metrics.read_text())
    except (OSError, ValueError):
        return {}
    return {s: m[s]["accuracy"] for s in ("validation", "testing")
            if isinstance(m.get(s), dict) and "accuracy" in m[s]}


def export(model_path, output=None, formats: Sequence[str] = ("savedmodel", "tflite"),
           quantize: Sequence[str] = ("none", "dynamic", "int8"), data: Optional[ExportData] = None,
           parity_clips: int = 64, max_drop: float = 1.0, log=print) -> dict:
    """Export ``model_path`` (a model.keras) and return the model card (also written to disk)."""
    from . import artifacts

    model_path = Path(model_path)
    model, info = artifacts.load_model(model_path, compile=False)
    labels, rate = list(info["labels"]), int(info["sample_rate"])
    samples = int(model.input_shape[-1])
    out = Path(output) if output else Path("saved_models") / run_name(model_path)
    formats = list(dict.fromkeys(formats))
    quantize = list(dict.fromkeys(["none", *quantize])) if "tflite" in formats else []
    unknown = set(formats) - {"savedmodel", "tflite"}
    if unknown:
        raise ValueError(f"unknown format(s) {', '.join(sorted(unknown))}; use savedmodel, tflite or all")
    if data is None:
        raise ValueError("export needs real clips for its checks: the dataset folder it was trained on")
    if data.audio.shape[1:] != (samples,):
        raise ValueError(f"evaluation clips have shape {data.audio.shape[1:]}, the model takes ({samples},)")

    card = _model_card(out / "model_card.json", model_path, info, samples)
    reference = keras_probabilities(model, data.audio[:parity_clips])
    keras_eval = keras_probabilities(model, data.audio)
    accuracy = {"keras": float((keras_eval.argmax(-1) == data.labels).mean())}
    log(f"{model_path}: {info.get('variant') or 'model'} at {rate} Hz, {len(labels)} labels; "
        f"checks on {len(data.audio)} {data.split} clips (Keras accuracy {accuracy['keras']:.4f})")
    artifacts.write_text(out / "labels.txt", "".join(f"{w}\n" for w in labels))
    if "savedmodel" in formats:
        card["exports"]["savedmodel"] = _checked_savedmodel(model, labels, out, data, reference, log)
    for q in quantize:
        key = "tflite_float32" if q == "none" else f"tflite_{q}"
        card["exports"][key] = _checked_tflite(model, q, out, data, reference, accuracy,
                                               max_drop, log)
    artifacts.make_readable(out)
    card["evaluation"] = {"split": data.split, "clips": int(len(data.labels)), "source": data.source,
                          "accuracy": {**accuracy, **{k: v[f"{data.split}_accuracy"]
                                                      for k, v in card["exports"].items()
                                                      if f"{data.split}_accuracy" in v}}}
    artifacts.write_json(out / "model_card.json", card)
    artifacts.make_readable(out)
    log(f"wrote {out}/ (labels.txt, model_card.json)")
    return card


def _model_card(path: Path, model_path: Path, info: dict, samples: int) -> dict:
    """The model card's description of the model (an earlier card's exports are kept)."""
    labels, rate = list(info["labels"]), int(info["sample_rate"])
    card = json.loads(path.read_text()) if path.is_file() else {}
    card.update({
        "name": run_name(model_path), "source": str(model_path),
        "variant": info.get("variant"), "sample_rate": rate, "labels": labels,
        "input": {"name": "audio", "dtype": "float32", "shape": ["batch", samples],
                  "description": f"1 s of mono audio at {rate} Hz, samples in [-1, 1]"},
        "output": {"probabilities": ["batch", len(labels)], "label": ["batch"],
                   "description": "softmax probabilities over labels.txt; label = top-1 word"},
        "run_accuracy": _run_accuracy(model_path),
        "exported": datetime.datetime.now().isoformat(timespec="seconds"),
        "versions": _versions(),
    })
    card.setdefault("exports", {})
    return card


def _checked_savedmodel(model, labels, out: Path, data: ExportData, reference, log) -> dict:
    """Write the SavedModel; its probabilities and labels must match the Keras model's."""
    dest = export_savedmodel(model, labels, out / "savedmodel")
    runner = SavedModelRunner(dest)
    audio = data.audio[:len(reference)]
    parity = check_parity(reference, runner.probabilities(audio), "the SavedModel")
    labels_out = runner(audio[:4])["label"]
    if labels_out != [labels[i] for i in reference[:4].argmax(-1)]:
        raise ExportError(f"the SavedModel's label output {labels_out} does not match its probabilities")
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    log(f"  savedmodel            {size / 1e6:7.2f} MB  parity max|diff| {parity['max_abs_diff']:.2e}, "
        f"same top-1 on {parity['clips']} clips  -> {dest}")
    return {"path": "savedmodel", "size_bytes": size, "signature": "serving_default", "parity": parity}


def _checked_tflite(model, q: str, out: Path, data: ExportData, reference, accuracy: dict,
                    max_drop: float, log) -> dict:
    """Write one TFLite file: float32 must match Keras; a quantized one's accuracy drop is measured."""
    from . import artifacts
    from .inference import tflite

    content, notes = convert_tflite(model, q, data.calibration)
    probs = tflite.TFLiteModel(content).probabilities(data.audio)
    acc = float((probs.argmax(-1) == data.labels).mean())
    entry = {"path": TFLITE_FILES[q], "size_bytes": len(content), "ops": notes["ops"],
             f"{data.split}_accuracy": acc, "clips": int(len(data.labels))}
    if q == "none":
        entry["parity"] = check_parity(reference, probs[:len(reference)], "the float32 TFLite model")
        accuracy["float32"] = acc
        line = f"parity max|diff| {entry['parity']['max_abs_diff']:.2e}, same top-1"
    else:
        drop = 100.0 * (accuracy.get("float32", accuracy["keras"]) - acc)
        entry.update(accuracy_drop_points=round(drop, 3), max_drop_points=max_drop,
                     within_tolerance=bool(drop <= max_drop))
        line = f"accuracy drop vs float {drop:+.2f} points"
        if q in ("int8", "int16x8"):
            entry.update({k: notes[k] for k in (f"{q}_mode", "float_ops", "float_ops_note")})
            if notes["float_ops"]:
                line += f"; float ops kept: {notes['float_ops']}"
    with artifacts.atomic_path(out / TFLITE_FILES[q]) as tmp:
        tmp.write_bytes(content)
    log(f"  {TFLITE_FILES[q]:21s} {len(content) / 1e6:7.2f} MB  {data.split} accuracy {acc:.4f}  {line}")
    if q != "none" and not entry["within_tolerance"]:
        hint = ("; --quantize int16x8 keeps int16 activations and usually float accuracy"
                if q == "int8" else "")
        log(f"  WARNING: {TFLITE_FILES[q]} loses {drop:.2f} points of accuracy "
            f"(limit {max_drop:g}){hint}")
    return entry


# ----------------------------------------------------------------------------- CLI
def _data_root(arg, model_path):
    from .data import resolve_data

    if arg is not None:
        return resolve_data(arg)
    config = Path(model_path).resolve().parent / "config.json"
    if config.is_file():
        recorded = json.loads(config.read_text()).get("data")
        if recorded and Path(recorded).is_dir():
            return Path(recorded)
    raise ValueError("pass --data: the dataset folder the model was trained on (for the parity "
                     "checks, int8 calibration and the accuracy comparison)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m kws_tf.export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a model.keras written by kws_tf.train")
    p.add_argument("--format", default="all", choices=("savedmodel", "tflite", "all"))
    p.add_argument("--quantize", default="all",
                   help="TFLite files besides float32: none, dynamic, int8, int16x8 (int16 "
                        "activations: float accuracy, int8 size, slow kernels) or all (= dynamic,int8; "
                        "comma-separated list allowed; default all). The float32 file is always written: it is the "
                        "reference the quantized ones are measured against")
    p.add_argument("--output", help="output folder (default saved_models/<run name>/)")
    cli.add_data_args(p, data_help="dataset folder ('synthetic' for the embedded one); default: "
                                   "the one recorded in the run's config.json")
    p.add_argument("--split", default="validation", choices=("validation", "testing"),
                   help="split for the parity checks and the accuracy comparison")
    p.add_argument("--eval-clips", type=int, default=1000, help="at most this many evaluation clips (0 = all)")
    p.add_argument("--calibration-clips", type=int, default=200,
                   help="training clips for the int8 representative dataset")
    p.add_argument("--max-drop", type=float, default=1.0,
                   help="accuracy points a quantized model may lose before a warning (default 1)")
    args = p.parse_args(argv)

    quantize = []
    for q in args.quantize.split(","):
        q = q.strip()
        if q == "all":
            quantize += QUANTIZE_ALL
        elif q in QUANTIZE_CHOICES:
            quantize.append(q)
        else:
            raise ValueError(f"--quantize: unknown {q!r}; use none, dynamic, int8, int16x8 or all")
    formats = ["savedmodel", "tflite"] if args.format == "all" else [args.format]

    from . import artifacts

    model_path = Path(args.model)
    if not model_path.is_file():
        raise FileNotFoundError(f"no model file at {model_path}")
    info = artifacts.read_model_info(model_path)
    if "labels" not in info or "sample_rate" not in info:
        _, info = artifacts.load_model(model_path, compile=False)
    root = _data_root(args.data, model_path)
    data = load_export_data(root, info["labels"], int(info["sample_rate"]), args.split,
                            args.calibration_clips, args.eval_clips, cache_dir=args.cache_dir,
                            on_error=args.on_error)
    card = export(model_path, args.output, formats, quantize, data, max_drop=args.max_drop)
    bad = [k for k, v in card["exports"].items() if v.get("within_tolerance") is False]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
