"""python -m kws_tf.predict MODEL FILE_OR_DIR...: label WAV files, or --stream a long recording.

MODEL is a ``model.keras`` (kws_tf.train), a SavedModel folder or a ``.tflite`` file (both from
kws_tf.export; their labels come from the ``labels.txt`` beside them).  WAVs of any sample
rate, channel count and bit depth are read like the training data: channels averaged,
resampled with kws_tf.Resample, padded/cropped to 1 s.  A file that cannot be read gets a
one-line error and the others still run; the exit code is 1 if any failed.

``--stream`` slides a 1 s window over one long recording every ``--hop`` seconds, averages
the probabilities of the windows of the last ``--average`` seconds and reports each keyword
whose average passes ``--threshold``, once: the same word again, or any word within
``--suppression`` seconds of the previous detection, is not reported (TensorFlow's
speech_commands ``RecognizeCommands``).  Labels starting with ``_`` (``_silence_``,
``_unknown_``) are never reported.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from . import cli

AUDIO_SUFFIXES = (".wav", ".wave")


# ----------------------------------------------------------------------------- models
class Scorer:
    """Any of the three model formats: ``probabilities(audio (n, samples)) -> (n, classes)``."""

    kind: str
    labels: list
    sample_rate: int

    def probabilities(self, audio) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class KerasScorer(Scorer):
    kind = "keras"

    def __init__(self, path):
        from . import artifacts

        self.model, info = artifacts.load_model(path, compile=False)
        self.labels, self.sample_rate = list(info["labels"]), int(info["sample_rate"])

    def probabilities(self, audio, batch_size: int = 32):
        from .runtime import softmax

        audio = np.asarray(audio, np.float32)
        out = []
        for i in range(0, len(audio), batch_size):
            # fixed-size batches (zero-padded): one traced function, no predict() set-up per call
            chunk = audio[i:i + batch_size]
            padded = np.pad(chunk, ((0, batch_size - len(chunk)), (0, 0)))
            out.append(np.asarray(self.model.predict_on_batch(padded))[:len(chunk)])
        return softmax(np.concatenate(out))


class SavedModelScorer(Scorer):
    kind = "savedmodel"

    def __init__(self, folder):
        from .runtime import SavedModelRunner

        self.runner = SavedModelRunner(folder)
        self.sample_rate = self.runner.samples  # the model takes one second of audio
        self.labels = read_labels(folder, self.runner.signature.structured_outputs["probabilities"].shape[-1])

    def probabilities(self, audio):
        return self.runner.probabilities(audio)


class TFLiteScorer(Scorer):
    kind = "tflite"

    def __init__(self, path):
        from .tflite import TFLiteModel

        self.model = TFLiteModel(path)
        self.sample_rate = self.model.samples
        self.labels = read_labels(Path(path).parent, self.model.num_classes)

    def probabilities(self, audio):
        return self.model.probabilities(audio)


def read_labels(folder, num_classes=None) -> list:
    """labels.txt in ``folder`` or its parent (an export folder holds it beside savedmodel/)."""
    folder = Path(folder)
    for candidate in (folder / "labels.txt", folder.parent / "labels.txt"):
        if candidate.is_file():
            labels = [line.strip() for line in candidate.read_text().splitlines() if line.strip()]
            if num_classes is not None and len(labels) != int(num_classes):
                raise ValueError(f"{candidate} has {len(labels)} labels, the model has {num_classes} outputs")
            return labels
    raise FileNotFoundError(f"no labels.txt in {folder} or {folder.parent} (kws_tf.export writes it)")


def load_scorer(path) -> Scorer:
    """A ``.keras`` file, a SavedModel folder or a ``.tflite`` file."""
    path = Path(path)
    if path.is_dir():
        return SavedModelScorer(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model at {path}")
    if path.suffix == ".tflite":
        return TFLiteScorer(path)
    if path.suffix == ".keras":
        return KerasScorer(path)
    raise ValueError(f"{path}: unknown model format; use a .keras file, a SavedModel folder or a .tflite file")


# ----------------------------------------------------------------------------- audio
def read_audio(path, sample_rate: int) -> np.ndarray:
    """The whole recording as float32 mono at ``sample_rate`` (via 16 kHz, like the dataset)."""
    from .data import read_wav
    from .data.audio import SAMPLE_RATE, check_rate, resample

    x, rate = read_wav(path)
    if rate != SAMPLE_RATE:
        check_rate(rate, path)
        x = resample(x, rate, SAMPLE_RATE)
    return resample(x, SAMPLE_RATE, sample_rate) if sample_rate != SAMPLE_RATE else x


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


# ----------------------------------------------------------------------------- streaming
@dataclasses.dataclass
class Detection:
    label: str
    score: float  # the averaged probability that passed the threshold
    start: float  # seconds: start of the window that scored the word highest
    time: float  # seconds: end of the window at which the detection was made


# Chosen on validation-split recordings with the 12-label gru4 (benchmarks/streaming.py: the most
# command words found at <= 30 false alarms per hour); README "The 12-label task and streaming
# detection" has the test-split figures.  The earlier defaults were 0.8 / 0.75 s / 1.0 s.
DEFAULTS = {"threshold": 0.9, "average": 0.5, "suppression": 0.75}


class RecognizeCommands:
    """Turns a stream of per-window probabilities into keyword detections.

    The logic of TensorFlow's speech_commands ``RecognizeCommands``: average the
    probabilities of the windows of the last ``average_window`` seconds (reporting nothing
    until ``minimum_count`` windows are in), take the top label, and report it if its average
    passes ``threshold``, it is not a ``_``-label, at least ``suppression`` seconds have
    passed since the previous detection, and it is a new word: a different label, or the same
    one after the scores fell below the threshold (or to a ``_``-label) in between, so that a
    word said twice with a pause is counted twice but one long utterance only once.
    """

    def __init__(self, labels: Sequence[str], average_window: float = None, threshold: float = None,
                 suppression: float = None, minimum_count: int = 2):
        average_window = DEFAULTS["average"] if average_window is None else average_window
        threshold = DEFAULTS["threshold"] if threshold is None else threshold
        suppression = DEFAULTS["suppression"] if suppression is None else suppression
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"--threshold must be in (0, 1], got {threshold}")
        if average_window <= 0 or suppression < 0 or minimum_count < 1:
            raise ValueError("--average must be > 0, --suppression >= 0 and minimum count >= 1")
        self.labels = list(labels)
        self.average_window, self.threshold = float(average_window), float(threshold)
        self.suppression, self.minimum_count = float(suppression), int(minimum_count)
        self._recent = collections.deque()  # (window start s, window end s, probabilities)
        self._last: Optional[Detection] = None
        self._armed = True

    def process(self, start: float, end: float, probabilities) -> Optional[Detection]:
        """Feed one window (its start/end time in seconds); return a Detection or None."""
        probabilities = np.asarray(probabilities, np.float64)
        if self._recent and end <= self._recent[-1][1]:
            raise ValueError(f"windows must come in time order ({end} after {self._recent[-1][1]})")
        self._recent.append((start, end, probabilities))
        while self._recent and self._recent[0][1] <= end - self.average_window + 1e-6:
            self._recent.popleft()
        if len(self._recent) < self.minimum_count:
            return None
        average = np.mean([p for _, _, p in self._recent], axis=0)
        top = int(np.argmax(average))
        label, score = self.labels[top], float(average[top])
        if label.startswith("_") or score < self.threshold:
            self._armed = True  # silence/unknown or nothing confident: the next word is new
            return None
        if self._last is not None and end - self._last.time < self.suppression:
            return None
        if self._last is not None and label == self._last.label and not self._armed:
            return None
        best = max(self._recent, key=lambda r: r[2][top])
        self._last = Detection(label, score, float(best[0]), float(end))
        self._armed = False
        return self._last


def window_starts(n_samples: int, window: int, hop: int) -> list:
    """Window starts covering the whole recording (the last window padded with zeros)."""
    last = max(n_samples - window, 0)
    starts = list(range(0, last + 1, hop))
    if starts[-1] < last:
        starts.append(starts[-1] + hop)
    return starts


def stream(scorer: Scorer, audio: np.ndarray, window: float = 1.0, hop: float = 0.25,
           recognizer: Optional[RecognizeCommands] = None, batch: int = 64) -> list:
    """Detections in ``audio`` (float32 at the scorer's rate), in time order."""
    rate = scorer.sample_rate
    if not 0 < window <= 10 or not 0 < hop <= window:
        raise ValueError(f"need 0 < --hop <= --window <= 10 s, got window {window}, hop {hop}")
    win, step = int(round(window * rate)), max(1, int(round(hop * rate)))
    recognizer = recognizer or RecognizeCommands(scorer.labels)
    audio = np.asarray(audio, np.float32)
    starts = window_starts(len(audio), win, step)
    padded = np.pad(audio, (0, max(starts[-1] + win - len(audio), 0)))
    detections = []
    for i in range(0, len(starts), batch):
        chunk = starts[i:i + batch]
        clips = np.stack([_fit(padded[s:s + win], rate) for s in chunk])
        for s, p in zip(chunk, scorer.probabilities(clips)):
            d = recognizer.process(s / rate, (s + win) / rate, p)
            if d is not None:
                detections.append(d)
    return detections


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    return x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))


# ----------------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m kws_tf.predict", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model.keras, a SavedModel folder, or a .tflite file")
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="WAV files or folders of them")
    p.add_argument("--top-k", type=int, default=3, help="labels printed per file (default 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per file (or detection)")
    s = p.add_argument_group("streaming (one long recording)")
    s.add_argument("--stream", action="store_true", help="detect keywords in one long WAV file")
    s.add_argument("--window", type=float, default=1.0, help="window length in seconds (default 1.0)")
    s.add_argument("--hop", type=float, default=0.25, help="seconds between windows (default 0.25)")
    s.add_argument("--threshold", type=float, default=DEFAULTS["threshold"],
                   help="averaged probability a word needs to be reported "
                        f"(default {DEFAULTS['threshold']})")
    s.add_argument("--average", type=float, default=DEFAULTS["average"],
                   help=f"seconds of windows averaged before deciding (default {DEFAULTS['average']})")
    s.add_argument("--suppression", type=float, default=DEFAULTS["suppression"],
                   help="seconds after a detection during which nothing is reported "
                        f"(default {DEFAULTS['suppression']})")
    s.add_argument("--min-count", type=int, default=2,
                   help="windows needed in the average before anything is reported (default 2)")
    args = p.parse_args(argv)
    if args.top_k < 1:
        raise ValueError("--top-k must be at least 1")

    scorer = load_scorer(args.model)
    k = min(args.top_k, len(scorer.labels))
    if not args.stream:
        failed = predict_files(scorer, args.inputs, k, args.json)
        if failed and not args.json:
            print(f"{failed} file(s) could not be read", file=sys.stderr)
        return 1 if failed else 0

    if len(args.inputs) != 1 or Path(args.inputs[0]).is_dir():
        raise ValueError("--stream takes exactly one WAV file")
    path = args.inputs[0]
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such file")
    recognizer = RecognizeCommands(scorer.labels, args.average, args.threshold, args.suppression,
                                   args.min_count)
    audio = read_audio(path, scorer.sample_rate)
    detections = stream(scorer, audio, args.window, args.hop, recognizer)
    for d in detections:
        if args.json:
            print(json.dumps({"file": str(path), **dataclasses.asdict(d)}), flush=True)
        else:
            print(f"{d.start:8.2f}s  {d.label:<10s} {d.score:.3f}  (detected at {d.time:.2f}s)")
    if not args.json:
        print(f"{len(detections)} keyword(s) in {len(audio) / scorer.sample_rate:.2f} s of {path}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
