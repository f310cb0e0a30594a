"""What every export is checked against: its probabilities equal the Keras model's (float
formats), and a quantized file's accuracy drop is measured and recorded."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..inference.scorers import SavedModelRunner
from .card import file_line, versus_float
from .clips import ExportData
from .savedmodel import export_savedmodel
from .tflite_convert import TFLITE_FILES, convert_tflite

PARITY_ATOL = 1e-4


def check_parity(reference: np.ndarray, probs: np.ndarray, what: str, atol: float = PARITY_ATOL) -> dict:
    diff = float(np.max(np.abs(reference - probs)))
    same = bool(np.array_equal(reference.argmax(-1), probs.argmax(-1)))
    if diff > atol or not same:
        n_diff = int((reference.argmax(-1) != probs.argmax(-1)).sum())
        raise ExportError(f"{what} does not match the Keras model: max |diff| {diff:.3g} "
                          f"(limit {atol:g}), {n_diff} of {len(probs)} top-1 labels differ")
    return {"clips": int(len(probs)), "max_abs_diff": diff, "same_top1": same}


def accuracy_drop(accuracy: dict, acc: float, max_drop: float) -> dict:
    """A quantized file's card entries: the points it loses against the float32 file (the Keras
    model where there is none), and whether that is within ``max_drop``."""
    drop = 100.0 * (accuracy.get("float32", accuracy["keras"]) - acc)
    return {"accuracy_drop_points": round(drop, 3), "max_drop_points": max_drop,
            "within_tolerance": bool(drop <= max_drop)}


def checked_savedmodel(model, labels, out: Path, data: ExportData, reference, log) -> dict:
    """Write the SavedModel; its probabilities and labels must match the Keras model's."""
    dest = export_savedmodel(model, labels, out / "savedmodel")
    runner = SavedModelRunner(dest)
    audio = data.audio[:len(reference)]
    parity = check_parity(reference, runner.probabilities(audio), "the SavedModel")
    labels_out = runner(audio[:4])["label"]
    if labels_out != [labels[i] for i in reference[:4].argmax(-1)]:
        raise ExportError(f"the SavedModel's label output {labels_out} does not match its probabilities")
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    log(file_line("savedmodel", size, f"parity max|diff| {parity['max_abs_diff']:.2e}, "
                                      f"same top-1 on {parity['clips']} clips  -> {dest}"))
    return {"path": "savedmodel", "size_bytes": size, "signature": "serving_default", "parity": parity}


def checked_tflite(model, q: str, out: Path, data: ExportData, reference, accuracy: dict,
                    max_drop: float, log, int8_scheme=None, metadata=None) -> dict:
    """Write one TFLite file: float32 must match Keras; a quantized one's accuracy drop is
    measured.  ``metadata``: the ``kws_tf`` entry written into it (labels, decision)."""
    from .. import artifacts
    from ..inference import tflite
    from .metadata import add_metadata

    content, notes = convert_tflite(model, q, data.calibration, int8_scheme=int8_scheme)
    if metadata is not None:
        content = add_metadata(content, metadata)
    probs = tflite.TFLiteModel(content).probabilities(data.audio)
    acc = float((probs.argmax(-1) == data.labels).mean())
    entry = {"path": TFLITE_FILES[q], "size_bytes": len(content), "ops": notes["ops"],
             f"{data.split}_accuracy": acc, "clips": int(len(data.labels))}
    if q == "none":
        entry["parity"] = check_parity(reference, probs[:len(reference)], "the float32 TFLite model")
        accuracy["float32"] = acc
        line = f"parity max|diff| {entry['parity']['max_abs_diff']:.2e}, same top-1"
    else:
        entry.update(accuracy_drop(accuracy, acc, max_drop))
        drop = entry["accuracy_drop_points"]
        line = versus_float(drop)
        if q in ("int8", "int16x8"):
            entry.update({k: notes[k] for k in (f"{q}_mode", "float_ops", "float_ops_note",
                                                 "int8_scheme") if k in notes})
            if notes["float_ops"]:
                line += f"; float ops kept: {notes['float_ops']}"
    with artifacts.atomic_path(out / TFLITE_FILES[q]) as tmp:
        tmp.write_bytes(content)
    log(file_line(TFLITE_FILES[q], len(content), f"{data.split} accuracy {acc:.4f}  {line}"))
    if q != "none" and not entry["within_tolerance"]:
        hint = ("; --quantize int16x8 keeps int16 activations and usually float accuracy"
                if q == "int8" else "")
        log(f"  WARNING: {TFLITE_FILES[q]} loses {drop:.2f} points of accuracy "
            f"(limit {max_drop:g}){hint}")
    return entry
