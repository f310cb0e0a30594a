"""python -m kws_tf.predict MODEL FILE_OR_DIR...: label WAV files, or --stream a long recording.

MODEL is a ``model.keras`` (kws_tf.train), a SavedModel folder or a ``.tflite`` file (both from
kws_tf.export; their labels come from the file's metadata or the ``labels.txt`` beside them),
or an export folder (``model_float32.tflite`` is picked for clips, the streaming int8 file
for ``--stream``; said in one line).  A ``.tflite`` file runs without TensorFlow or Keras.  WAVs of any sample
rate, channel count and bit depth are read like the training data: channels averaged,
resampled with kws_tf.Resample, padded/cropped to 1 s.  A file that cannot be read gets a
one-line error and the others still run; the exit code is 1 if any failed.

``--stream`` slides a 1 s window over one long recording every ``--hop`` seconds, averages
the probabilities of the windows of the last ``--average`` seconds and reports each keyword
whose average passes ``--threshold``, once: the same word again, or any word within
``--suppression`` seconds of the previous detection, is not reported (TensorFlow's
speech_commands ``RecognizeCommands``).  Labels starting with ``_`` (``_silence_``,
``_unknown_``) are never reported.

A streaming model (``model_stream.keras``, ``model_stream_*.tflite``) or a window
``model.keras`` (whose exact streaming model is built on the fly) runs packet by packet:
``kws_tf.listen``'s path, default hop and output.  ``--windows`` (and SavedModels, window
``.tflite`` files, ``--window`` other than 1 s) slides the window model itself, from the
recording's first sample, every ``--hop`` seconds (default 0.25).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from . import cli
from .inference.scorers import Scorer, load_scorer

AUDIO_SUFFIXES = (".wav", ".wave")


# ----------------------------------------------------------------------------- audio
def read_audio(path, sample_rate: int) -> np.ndarray:
    """The whole recording as float32 mono at ``sample_rate`` (via 16 kHz, like the dataset)."""
    from .data.audio import read_audio as read

    return read(path, sample_rate)


def read_clip(path, sample_rate: int) -> np.ndarray:
    """One model input: exactly the training pipeline's decoding (kws_tf.data.decode_clip)."""
    from .data import decode_clip

    return decode_clip(path, sample_rate)


def expand_inputs(paths: Sequence[str]) -> list:
    """Files as given; folders become their WAV files (recursively, sorted)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file())
            out.extend(found)
            if not found:
                out.append(p)  # reported as an error: nothing to label there
        else:
            out.append(p)
    return out


# ----------------------------------------------------------------------------- files
def top_k(probs: np.ndarray, labels: Sequence[str], k: int) -> list:
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"label": labels[i], "probability": float(probs[i])} for i in order]


def predict_files(scorer: Scorer, paths, k: int = 3, as_json: bool = False, batch: int = 32,
                  out=None, err=None) -> int:
    """Print the top-k of every file; return how many failed."""
    from .data import DataError

    out, err = out or sys.stdout, err or sys.stderr
    failed = 0
    files = expand_inputs(paths)
    for start in range(0, len(files), batch):
        results = []  # per file, in input order: a clip or an error message
        for f in files[start:start + batch]:
            try:
                if f.is_dir():
                    raise DataError(f"{f}: no .wav files in this folder")
                if not f.exists():
                    raise DataError(f"{f}: no such file")
                results.append((f, read_clip(f, scorer.sample_rate), None))
            except (DataError, OSError, ValueError) as e:
                results.append((f, None, str(e) if str(f) in str(e) else f"{f}: {e}"))
        good = [clip for _, clip, _ in results if clip is not None]
        probs = iter(scorer.probabilities(np.stack(good)) if good else [])
        for f, clip, msg in results:
            if msg is not None:
                failed += 1
                if as_json:
                    print(json.dumps({"file": str(f), "error": msg}), file=out, flush=True)
                else:
                    print(f"error: {msg}", file=err, flush=True)
                continue
            top = top_k(next(probs), scorer.labels, k)
            if as_json:
                print(json.dumps({"file": str(f), "top": top}), file=out, flush=True)
            else:
                ranked = "  ".join(f"{t['label']} {t['probability']:.3f}" for t in top)
                print(f"{f}: {ranked}", file=out, flush=True)
    return failed


# ----------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    p = cli.ArgumentParser(prog="python -m kws_tf.predict", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model.keras, a SavedModel folder, a .tflite file, or an export folder")
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="WAV files or folders of them")
    p.add_argument("--top-k", type=int, default=3, help="labels printed per file (default 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per file (or detection)")
    s = p.add_argument_group("streaming (one long recording)")
    s.add_argument("--stream", action="store_true", help="detect keywords in one long WAV file")
    s.add_argument("--window", type=float, default=1.0, help="window length in seconds (default 1.0)")
    s.add_argument("--hop", type=float, default=None,
                   help="seconds between windows (default: a streaming model's packet, a window "
                        "model.keras's default hop; 0.25 when sliding windows)")
    cli.add_decision_args(s)
    s.add_argument("--windows", action="store_true",
                   help="slide the window model itself over the recording instead of running "
                        "its exact streaming model packet by packet (what SavedModels and "
                        "window .tflite files always do)")
    args = p.parse_args(argv)
    if args.top_k < 1:
        raise ValueError("--top-k must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    note = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if not args.stream:
        scorer = load_scorer(args.model, note)
        failed = predict_files(scorer, args.inputs, min(args.top_k, len(scorer.labels)), args.json)
        if failed and not args.json:
            print(f"{failed} file(s) could not be read", file=sys.stderr)
        return 1 if failed else 0

    from .inference.resolve import resolve_model
    from .streaming.runner import report

    cli.check_decision_args(args)
    if len(args.inputs) != 1 or Path(args.inputs[0]).is_dir():
        raise ValueError("--stream takes exactly one WAV file")
    path = args.inputs[0]
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such file")
    model = resolve_model(args.model, "predict" if args.windows else "stream", note)
    slid = args.windows or args.window != 1.0
    if is_streaming_model(model):
        if slid:
            raise ValueError(f"{model.name} is a streaming model: it scores 1 s windows packet "
                             "by packet, so --window must be 1.0 and --windows does not apply")
    elif slid or model.suffix != ".keras":  # a window model.keras streams exactly, as listen does
        return slide_windows(args, model, path, note)
    from .streaming.audio import wav_packets
    from .streaming.runner import StreamingRunner

    runner = StreamingRunner.load(model, args.hop, note=note)
    report(runner.windows(wav_packets(path, runner.hop, note), note), runner.labels, runner.info,
           args, sys.stdout, note, path, lambda: runner.input_seconds)
    return 0


def slide_windows(args, model, path, note) -> int:
    """--stream by sliding the window model over the whole recording (SavedModels, window
    .tflite files, --windows), decided and printed as the stream path does."""
    from .streaming.geometry import WINDOW_HOP_SECONDS
    from .streaming.runner import report
    from .streaming.windows import slide

    scorer = load_scorer(model)
    audio = read_audio(path, scorer.sample_rate)
    hop = WINDOW_HOP_SECONDS if args.hop is None else args.hop
    report(zip(*slide(scorer, audio, args.window, hop)), scorer.labels,
           getattr(scorer, "info", {}), args, sys.stdout, note, path,
           lambda: len(audio) / scorer.sample_rate)
    return 0


def is_streaming_model(path) -> bool:
    """A model_stream.keras or a streaming .tflite (audio and state_* inputs)."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix == ".keras":
        from .artifacts import read_model_info

        return bool(read_model_info(path).get("streaming"))
    if path.suffix == ".tflite":
        from .inference.tflite import TFLiteModel

        return TFLiteModel(path).streaming
    return False


if __name__ == "__main__":
    sys.exit(cli.run(main))
