"""``export()``: one model.keras to a checked export folder (SavedModel, TFLite files, labels,
model card)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from .card import model_card, run_name
from .checks import checked_savedmodel, checked_tflite
from .clips import ExportData
from .metadata import window_metadata
from .savedmodel import keras_probabilities

# A user's exports go to their own (git-ignored) folder: in saved_models/, beside the models
# the repository ships, they showed up as untracked files.
DEFAULT_FOLDER = Path("exports")


def export(model_path, output=None, formats: Sequence[str] = ("savedmodel", "tflite"),
           quantize: Sequence[str] = ("none", "dynamic", "int8"), data: Optional[ExportData] = None,
           parity_clips: int = 64, max_drop: float = 1.0, log=print, streaming: bool = False,
           hop_strides=None, int8_scheme=None) -> dict:
    """Export ``model_path`` (a model.keras) and return the model card (also written to disk).

    ``streaming`` also writes model_stream.keras and model_stream_<q>.tflite (float32 and each
    of ``quantize``) at ``hop_strides`` (default: the variant's default hop).  ``int8_scheme``:
    one of tflite_convert.INT8_SCHEMES (default INT8_SCHEME)."""
    from .. import artifacts

    model_path = Path(model_path)
    model, info = artifacts.load_model(model_path, compile=False)
    labels, rate = list(info["labels"]), int(info["sample_rate"])
    samples = int(model.input_shape[-1])
    out = Path(output) if output else DEFAULT_FOLDER / run_name(model_path)
    formats = list(dict.fromkeys(formats))
    stream_quantize = [q for q in dict.fromkeys(quantize) if q != "none"]
    quantize = list(dict.fromkeys(["none", *quantize])) if "tflite" in formats else []
    unknown = set(formats) - {"savedmodel", "tflite"}
    if unknown:
        raise ValueError(f"unknown format(s) {', '.join(sorted(unknown))}; use savedmodel, tflite or all")
    if data is None:
        raise ValueError("export needs real clips for its checks: the dataset folder it was trained on")
    if data.audio.shape[1:] != (samples,):
        raise ValueError(f"evaluation clips have shape {data.audio.shape[1:]}, the model takes ({samples},)")

    card = model_card(out / "model_card.json", model_path, info, samples)
    reference = keras_probabilities(model, data.audio[:parity_clips])
    keras_eval = keras_probabilities(model, data.audio)
    accuracy = {"keras": float((keras_eval.argmax(-1) == data.labels).mean())}
    log(f"{model_path}: {info.get('variant') or 'model'} at {rate} Hz, {len(labels)} labels; "
        f"checks on {len(data.audio)} {data.split} clips (Keras accuracy {accuracy['keras']:.4f})")
    artifacts.write_text(out / "labels.txt", "".join(f"{w}\n" for w in labels))
    if streaming:  # chosen first: the window files carry the same decision settings
        info = _with_decision(model_path, info, data.source, log)
    if "savedmodel" in formats:
        card["exports"]["savedmodel"] = checked_savedmodel(model, labels, out, data, reference, log)
    for q in quantize:
        key = "tflite_float32" if q == "none" else f"tflite_{q}"
        card["exports"][key] = checked_tflite(
            model, q, out, data, reference, accuracy, max_drop, log, int8_scheme,
            window_metadata(labels, info, "float32" if q == "none" else q, samples))
    if streaming:
        from .stream_folder import export_streaming

        export_streaming(model, info, out, stream_quantize, data, card, hop_strides,
                         parity_clips, max_drop, log, int8_scheme)
    artifacts.make_readable(out)
    card["evaluation"] = {"split": data.split, "clips": int(len(data.labels)), "source": data.source,
                          "accuracy": {**accuracy, **{k: v[f"{data.split}_accuracy"]
                                                      for k, v in card["exports"].items()
                                                      if f"{data.split}_accuracy" in v}}}
    artifacts.write_json(out / "model_card.json", card)
    artifacts.make_readable(out)
    log(f"wrote {out}/ (labels.txt, model_card.json)")
    return card


def _with_decision(model_path, info: dict, root, log) -> dict:
    """A spotter without decision settings of its own gets them chosen here, on ``root``'s
    validation recordings, for the streaming files' metadata (model.keras stays as it is)."""
    if info.get("decision") or not root:
        return info
    from ..detection.choose import choose_decision, describe, finds_nothing
    from ..inference.scorers import load_scorer

    chosen = choose_decision(load_scorer(model_path), root)
    if not chosen:
        return info
    if finds_nothing(chosen):  # settings that never fire: the streaming files go without
        log("  " + describe(chosen).replace("nothing stored", "none stored in the streaming files"))
        return info
    chosen["decision_chosen"]["by"] = "export"
    log("  " + describe(chosen).replace("stored in the model", "stored in the streaming files"))
    return {**info, **chosen}
