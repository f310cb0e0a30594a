"""``export_streaming``: a window model's exact streaming form, as ``model_stream.keras`` and
checked ``model_stream_<q>.tflite`` files (with the ``kws_tf`` metadata), into the model card."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .card import NAME_WIDTH, file_line, versus_float
from .checks import accuracy_drop, check_parity
from .clips import ExportData
from .metadata import add_metadata, stream_metadata
from .stream import (CARD_KEYS, STREAM_FILES, STREAM_KERAS, calibration_feeds,
                     convert_stream_tflite, keras_stream, stream_packets, tflite_stream_graph)


def export_streaming(model, info: dict, out: Path, quantize, data: ExportData, card: dict,
                     hop_strides=None, parity_clips: int = 64, max_drop: float = 1.0,
                     log=print, int8_scheme=None) -> dict:
    """Write the streaming files for ``quantize`` ("none" = float32 first) into ``out``;
    add their entries to ``card["exports"]`` and the metadata to ``card["streaming"]``."""
    from ..streaming import model as sm

    labels = list(info["labels"])
    stream = sm.build_streaming_model(model, hop_strides)
    sinfo = sm.streaming_info(stream)
    meta = stream_metadata(sinfo, labels, info, "float32")
    # the evaluation clips are at the window model's input rate (16 kHz if it resamples inside)
    cal16, eval16 = data.stream_clips(int(info.get("input_rate", info["sample_rate"])))
    packets = stream_packets(eval16, sinfo)
    reference = keras_stream(stream, sinfo, packets)  # (clips, packets, classes)
    accuracy = {"keras": float((reference[:, -1].argmax(-1) == data.labels).mean())}
    sm.save(stream, out / STREAM_KERAS, labels, variant=info.get("variant"),
            decision=meta["decision"], decision_source=meta["decision_source"])
    card["exports"]["keras_stream"] = {
        "path": STREAM_KERAS, "size_bytes": (out / STREAM_KERAS).stat().st_size,
        f"{data.split}_accuracy": accuracy["keras"], "clips": int(len(data.labels))}
    card["streaming"] = {k: v for k, v in meta.items() if k != "quantization"}
    log(f"  {STREAM_KERAS:{NAME_WIDTH}s} hop {sinfo['hop']} samples ({meta['hop_seconds'] * 1000:g} ms, "
        f"{sinfo['hop_strides']} stride(s)), {packets.shape[1]} packets per clip, "
        f"{data.split} accuracy {accuracy['keras']:.4f}; decision settings: "
        f"{meta['decision_source']}")
    unrolled = tflite_stream_graph(model, sinfo["hop_strides"])
    feeds = (calibration_feeds(stream, sinfo, cal16)
             if any(q in ("int8", "int16x8") for q in quantize) else None)
    for q in dict.fromkeys(["none", *quantize]):
        card["exports"][CARD_KEYS[q]] = _checked_stream_tflite(
            unrolled, sinfo, q, feeds, stream_metadata(sinfo, labels, info, _qname(q)), out,
            data, packets, reference[:parity_clips], accuracy, max_drop, log, int8_scheme)
    return card


def micro_entry(content) -> dict:
    """Arena, flash and ops under TFLite Micro, or how to get them (the extra is optional)."""
    from . import micro

    if not micro.available():
        return {"flash_bytes": len(content),
                "arena_bytes": "not measured: pip install 'kws_tf[micro]' (tflite-micro)"}
    return micro.card_entry(content)


def _qname(q: str) -> str:
    return "float32" if q == "none" else q


def _checked_stream_tflite(unrolled, sinfo, q, feeds, meta, out, data, packets, reference,
                           accuracy, max_drop, log, int8_scheme=None) -> dict:
    """One streaming .tflite file: float32 must match the Keras stream at every packet; a
    quantized one's accuracy drop (last packet of each clip) is measured."""
    from .. import artifacts
    from ..inference.tflite import TFLiteModel

    content, notes = convert_stream_tflite(unrolled, sinfo, q, feeds, int8_scheme)
    content = add_metadata(content, meta)
    runner = TFLiteModel(content)
    probs = np.stack([runner.run(p) for p in packets])
    acc = float((probs[:, -1].argmax(-1) == data.labels).mean())
    name = STREAM_FILES[q]
    entry = {"path": name, "size_bytes": len(content), "ops": notes["ops"],
             f"{data.split}_accuracy": acc, "clips": int(len(data.labels)),
             "signature": {"name": "serving_default", "inputs": meta["inputs"],
                           "outputs": meta["outputs"]},
             "metadata": "kws_tf (JSON in the flatbuffer's metadata list)"}
    entry["micro"] = micro_entry(content)
    if q == "none":
        n = len(reference)
        entry["parity"] = check_parity(reference.reshape(-1, reference.shape[-1]),
                                       probs[:n].reshape(-1, probs.shape[-1]),
                                       "the float32 streaming TFLite model")
        entry["parity"]["packets"] = int(reference.shape[1])
        accuracy["float32"] = acc
        line = f"parity max|diff| {entry['parity']['max_abs_diff']:.2e} over every packet"
    else:
        entry.update(accuracy_drop(accuracy, acc, max_drop))
        drop = entry["accuracy_drop_points"]
        entry.update({k: notes[k] for k in notes if k.endswith("_mode") or k.startswith(
            "float_ops") or k == "int8_scheme"})
        line = versus_float(drop)
    with artifacts.atomic_path(out / name) as tmp:
        tmp.write_bytes(content)
    log(file_line(name, len(content), f"{data.split} accuracy {acc:.4f}  {line}"))
    if q != "none" and not entry["within_tolerance"]:
        log(f"  WARNING: {name} loses {drop:.2f} points of accuracy (limit {max_drop:g})")
    return entry
