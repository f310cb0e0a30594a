"""The ``python -m kws_tf.export`` command line (the package's docstring is its help)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import cli
from . import __doc__
from .clips import load_export_data
from .folder import export
from .tflite_convert import (INT8_SCHEME, INT8_SCHEMES, QUANTIZE_ALL, QUANTIZE_CHOICES,
                             STREAM_INT8_SCHEME)


def _data_root(arg, model_path):
    from ..data import resolve_data

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
    p = cli.ArgumentParser(prog="python -m kws_tf.export", description=cli.first_paragraph(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a model.keras written by kws_tf.train")
    p.add_argument("--format", default="all", choices=("savedmodel", "tflite", "all"),
                   help="what to write: a SavedModel folder, TFLite files, or both (default all)")
    p.add_argument("--quantize", default="all",
                   help="TFLite files besides float32: none, dynamic, int8, int16x8 (int16 "
                        "activations: float accuracy, int8 size, slow kernels) or all (= dynamic,int8; "
                        "comma-separated list allowed; default all). The float32 file is always written: it is the "
                        "reference the quantized ones are measured against")
    p.add_argument("--output", help="output folder (default exports/<run name>/; the shipped "
                                    "models in saved_models/ are the repository's own)")
    cli.add_data_args(p, data_help="dataset folder ('synthetic' for the embedded one); default: "
                                   "the one recorded in the run's config.json")
    p.add_argument("--split", default="validation", choices=("validation", "testing"),
                   help="split for the parity checks and the accuracy comparison (default "
                        "validation)")
    p.add_argument("--eval-clips", type=int, default=1000,
                   help="at most this many clips of --split for the checks and the accuracy "
                        "comparison (0 = all; default 1000)")
    p.add_argument("--calibration-clips", type=int, default=200,
                   help="clips that calibrate the int8/int16x8 files' activation ranges: four "
                        "fifths training clips, one fifth silence and noise (default 200)")
    p.add_argument("--max-drop", type=float, default=1.0,
                   help="accuracy points a quantized model may lose before a warning (default 1)")
    p.add_argument("--int8-scheme", default=None, choices=sorted(INT8_SCHEMES),
                   help="how int8 files quantize: " + "; ".join(
                       f"{k}: {v}" for k, v in INT8_SCHEMES.items()) + f" (default {INT8_SCHEME} "
                       f"for window files, {STREAM_INT8_SCHEME} for streaming ones)")
    p.add_argument("--streaming", action="store_true",
                   help="also write model_stream.keras and model_stream_<q>.tflite: the exact "
                        "streaming model (16 kHz packets in, states as explicit inputs/outputs)")
    p.add_argument("--hop-strides", type=int, default=None,
                   help="streaming packet length in model strides (default: the variant's "
                        "default hop; 1 for the four-block variants)")
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

    from .. import artifacts

    model_path = Path(args.model)
    if not model_path.is_file():
        raise artifacts.missing_model(model_path)
    if args.output:  # before the data is read and the files are converted
        artifacts.check_output_folder(args.output)
    info = artifacts.read_model_info(model_path)
    if "labels" not in info or "input_rate" not in info:
        _, info = artifacts.load_model(model_path, compile=False)
    root = _data_root(args.data, model_path)
    data = load_export_data(root, info["labels"], int(info["input_rate"]), args.split,
                            args.calibration_clips, args.eval_clips, cache_dir=args.cache_dir,
                            on_error=args.on_error, streaming=args.streaming)
    card = export(model_path, args.output, formats, quantize, data, max_drop=args.max_drop,
                  streaming=args.streaming, hop_strides=args.hop_strides,
                  int8_scheme=args.int8_scheme)
    bad = [k for k, v in card["exports"].items() if v.get("within_tolerance") is False]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
