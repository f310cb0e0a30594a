"""python -m kws_tf.listen MODEL [WAV | -]: spot keywords in a stream, one packet at a time.

MODEL is a streaming model (``model_stream.keras`` or a ``model_stream_*.tflite`` from
``kws_tf.export --streaming``), a window ``model.keras`` (whose exact streaming model is built
on the fly, ``kws_tf.build_streaming_model``), or an export folder holding them (the streaming
int8 file is picked, and said).  A ``.tflite`` file runs with numpy and the LiteRT interpreter
alone: no TensorFlow or Keras is imported.  The input is a WAV file (any rate: others are
resampled to 16 kHz as they are read) or ``-``, standard input: a WAV if it starts with a WAV
header, else raw 16-bit little-endian mono PCM at 16 kHz (``--rate`` for another rate), e.g.

    arecord -q -t raw -f S16_LE -r 16000 -c 1 | python -m kws_tf.listen model_stream_int8.tflite -

Each detection is printed when it is made: time (the end of the window that made it, in
seconds from the start of the input), word, score, and where its best window starts;
``--json`` prints one object per line with ``label``, ``score``, ``start`` and ``time``.
``kws_tf.predict --stream`` runs the same path.  A stream shorter than the window is scored
to its end (silence after it).
"""
from __future__ import annotations

import argparse
import os
import sys

from . import cli


def _parser():
    p = cli.ArgumentParser(prog="python -m kws_tf.listen", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model_stream.keras, a model_stream_*.tflite, a window "
                                 "model.keras, or an export folder")
    p.add_argument("input", nargs="?", default="-",
                   help="a WAV file, or - for standard input: a WAV, or raw S16_LE mono PCM "
                        "(default)")
    p.add_argument("--rate", type=int, default=None,
                   help="sample rate of raw PCM on standard input (default 16000); resampled "
                        "to 16 kHz as it is read")
    p.add_argument("--json", action="store_true", help="one JSON object per detection")
    p.add_argument("--hop", type=float, default=None,
                   help="seconds per packet for a window model.keras (rounded to a whole number "
                        "of its strides; default: the variant's default hop)")
    cli.add_decision_args(p)
    return p


def main(argv=None, stdin=None, stdout=None, stderr=None) -> int:
    from .streaming.audio import input_packets, wav_packets
    from .streaming.runner import StreamingRunner, report

    args = _parser().parse_args(argv)
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    note = lambda line: print(line, file=stderr, flush=True)  # noqa: E731
    cli.check_decision_args(args)
    if args.rate is not None and args.rate <= 0:
        raise ValueError(f"--rate must be a positive number of Hz, got {args.rate}")
    if args.input != "-" and args.rate is not None:
        raise ValueError("--rate is for raw PCM on standard input; a WAV file says its own rate")
    if args.input != "-" and not os.path.exists(args.input):
        raise FileNotFoundError(f"{args.input}: no such file")
    runner = StreamingRunner.load(args.model, args.hop, note=note)
    if args.input == "-":
        source = stdin if stdin is not None else sys.stdin.buffer
        packets, name = input_packets(source, runner.hop, args.rate, note), "standard input"
    else:
        packets, name = wav_packets(args.input, runner.hop, note), args.input
    try:
        report(runner.windows(packets, note), runner.labels, runner.info, args, stdout, note,
               name, lambda: runner.input_seconds)
    except BrokenPipeError:
        _quiet_stdout(stdout)
        note(f"listen: the output was closed; stopped after {runner.window_end:.2f} s of audio")
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
