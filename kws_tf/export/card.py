"""model_card.json: what was exported, from which run, with which versions and checks."""
from __future__ import annotations

import datetime
import json
from pathlib import Path

from ..platform.machine import environment


# The longest name an export prints (model_stream_float32.tflite): every line pads its file
# name to it, so that sizes and accuracies of the window and streaming files line up.
NAME_WIDTH = 27


def file_line(name: str, size_bytes: float, rest: str) -> str:
    """One printed line of an export: file name, size, then what its checks found."""
    return f"  {name:{NAME_WIDTH}s} {size_bytes / 1e6:7.2f} MB  {rest}"


def versus_float(drop_points: float) -> str:
    """A quantized file against the float one: a negative drop is a gain, said as one."""
    if drop_points < 0:
        return f"accuracy gain vs float {-drop_points:.2f} points"
    return f"accuracy drop vs float {drop_points:.2f} points"


def run_name(model_path) -> str:
    """``runs/gru1-16k-2026.../model.keras`` -> ``gru1-16k-2026...``; other files: their stem."""
    p = Path(model_path).resolve()
    return p.parent.name if p.name == "model.keras" else p.stem


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


def model_card(path: Path, model_path: Path, info: dict, samples: int) -> dict:
    """The model card's description of the model (an earlier card's exports are kept)."""
    labels, rate = list(info["labels"]), int(info["sample_rate"])
    input_rate = int(info.get("input_rate", rate))
    card = json.loads(path.read_text()) if path.is_file() else {}
    card.update({
        "name": run_name(model_path), "source": str(model_path),
        "variant": info.get("variant"), "sample_rate": rate, "input_rate": input_rate,
        "labels": labels,
        "input": {"name": "audio", "dtype": "float32", "shape": ["batch", samples],
                  "description": f"1 s of mono audio at {input_rate} Hz, samples in [-1, 1]"},
        "output": {"probabilities": ["batch", len(labels)], "label": ["batch"],
                   "description": "softmax probabilities over labels.txt; label = top-1 word"},
        "run_accuracy": _run_accuracy(model_path),
        "exported": datetime.datetime.now().isoformat(timespec="seconds"),
        "versions": environment(),
    })
    card.setdefault("exports", {})
    return card
