"""python -m kws_tf.listen MODEL [WAV | -]: spot keywords in a stream, one packet at a time.

MODEL is a streaming model (``model_stream.keras`` or a ``model_stream_*.tflite`` from
``kws_tf.export --streaming``) or a window ``model.keras``, whose exact streaming model is
built on the fly (``kws_tf.build_streaming_model``).  The input is a WAV file (any rate:
others are resampled to 16 kHz as they are read) or ``-``: raw 16-bit little-endian mono
16 kHz PCM on standard input, e.g.

    arecord -q -t raw -f S16_LE -r 16000 -c 1 | python -m kws_tf.listen model_stream_int8.tflite -

Each detection is printed when it is made: time (the end of the window that made it, in
seconds from the start of the input), word, score; ``--json`` prints one object per line
with ``label``, ``score`` and ``time``.  The decision is ``kws_tf.predict --stream``'s
(RecognizeCommands: ``--threshold``, ``--average``, ``--suppression``, ``--min-count``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from . import cli
from .inference.streaming import DEFAULTS, RecognizeCommands, decision_settings, recognizer


def _parser():
    p = argparse.ArgumentParser(prog="python -m kws_tf.listen", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model_stream.keras, a model_stream_*.tflite, or a window model.keras")
    p.add_argument("input", nargs="?", default="-",
                   help="a WAV file, or - for raw S16_LE mono 16 kHz PCM on stdin (default)")
    p.add_argument("--json", action="store_true", help="one JSON object per detection")
    p.add_argument("--hop", type=float, default=None,
                   help="seconds per packet for a window model.keras (rounded to a whole number "
                        "of its strides; default: the variant's default hop)")
    p.add_argument("--threshold", type=float, default=None,
                   help="averaged probability a word needs (default: the model's own setting, "
                        f"else {DEFAULTS['threshold']})")
    p.add_argument("--average", type=float, default=None,
                   help=f"seconds of windows averaged (default: the model's, else {DEFAULTS['average']})")
    p.add_argument("--suppression", type=float, default=None,
                   help="seconds after a detection with none reported (default: the model's, "
                        f"else {DEFAULTS['suppression']})")
    p.add_argument("--min-count", type=int, default=2,
                   help="windows needed in the average before anything is reported (default 2)")
    p.add_argument("--words", default=None, metavar="WORD,...",
                   help="report only these words, the other labels counting as _unknown_; "
                        "'all' for every label (default: the model's own words: a model of "
                        "all 35 words spots the ten commands; else every label)")
    return p


def format_detection(d, as_json: bool) -> str:
    if as_json:
        return json.dumps({"label": d.label, "score": round(float(d.score), 6),
                           "time": round(float(d.time), 6)})
    return f"{d.time:8.3f}s  {d.label:<10s} {d.score:.3f}"


def main(argv=None, stdin=None, stdout=None, stderr=None) -> int:
    from .inference.packets import StreamingRunner, pcm_packets, wav_packets

    args = _parser().parse_args(argv)
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    note = lambda line: print(line, file=stderr, flush=True)  # noqa: E731
    recognizer_args = (args.average, args.threshold, args.suppression, args.min_count)
    RecognizeCommands(["x"], *recognizer_args)  # bad settings fail before the model loads
    runner = StreamingRunner.load(args.model, args.hop, note=note)
    settings, line = decision_settings(runner.info, args.threshold, args.average,
                                       args.suppression, args.words)
    note(line)
    detector = recognizer(runner.labels, settings, args.min_count)
    if args.input == "-":
        source = stdin if stdin is not None else sys.stdin.buffer
        packets, name = pcm_packets(source, runner.hop, note), "standard input"
    else:
        if not os.path.exists(args.input):
            raise FileNotFoundError(f"{args.input}: no such file")
        packets, name = wav_packets(args.input, runner.hop, note), args.input
    found = 0
    try:
        for d in runner.detections(packets, detector):
            print(format_detection(d, args.json), file=stdout, flush=True)
            found += 1
    except BrokenPipeError:
        _quiet_stdout(stdout)
        note(f"listen: the output was closed; stopped after {runner.window_end:.2f} s of audio")
        return 0
    if not args.json:
        note(f"{found} keyword(s) in {runner.packets * runner.hop_seconds:.2f} s of {name}")
    return 0


def _quiet_stdout(stdout) -> None:
    """Point a closed stdout at /dev/null so the interpreter's final flush stays silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(cli.run(main))
