"""The streaming benchmark's recordings: clips of one split strung together with gaps, each
gap and the clip after it on one background (digital silence or a background-noise recording
at one of several levels).

    python -m kws_tf.detection.recordings DATA --split testing --output recording.wav

writes one of them as a WAV (16 kHz, 16-bit mono) to try ``listen`` and ``predict --stream``
on, and beside it ``recording.txt``: when each word starts, the command words marked.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

LEVELS_DBFS = (-60.0, -50.0, -40.0)
# The ten command words of Speech Commands (TensorFlow's 12-label task): what a model of every
# word spots in a stream.
COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
RATE = 16000


@dataclasses.dataclass
class Event:
    label: str  # the clip's word
    start: float  # seconds: the clip's start in the recording
    command: bool  # one of the words to spot
    background: str  # "silence" or "<noise>@<level>dBFS"
    gap_start: float = 0.0  # seconds: start of the gap before the clip (same background)


@dataclasses.dataclass
class Recording:
    audio: np.ndarray  # float32 at 16 kHz
    events: list  # Event, in time order

    @property
    def seconds(self) -> float:
        return len(self.audio) / RATE


def backgrounds(noise: dict) -> list:
    """[(name, float32 recording normalised to RMS 1 or None, level dBFS)]: silence, then each
    noise at each level."""
    out = [("silence", None, None)]
    for name, x in sorted(noise.items()):
        x = np.asarray(x, np.float32) / 32768.0
        rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
        if rms <= 0:
            continue
        for level in LEVELS_DBFS:
            out.append((f"{name}@{level:g}dBFS", x / rms, level))
    return out


def build_recordings(clips: np.ndarray, words: Sequence[str], commands: Sequence[str],
                     noise: dict, seed: int, per_recording=(20, 10),
                     gap=(1.5, 3.0)) -> list:
    """Recordings from ``clips`` (int16 (n, 16000)) whose words are ``words``.

    Every command clip is used once, ``per_recording[0]`` to a recording, with
    ``per_recording[1]`` clips of other words (cycled if there are fewer); deterministic
    for ``seed``.
    """
    rng = np.random.default_rng(seed)
    commands = set(commands)
    is_cmd = np.array([w in commands for w in words])
    cmd_rows = rng.permutation(np.flatnonzero(is_cmd))
    other_rows = rng.permutation(np.flatnonzero(~is_cmd))
    n_cmd, n_other = per_recording
    n_rec = max(1, int(np.ceil(len(cmd_rows) / n_cmd)))
    kinds = backgrounds(noise)
    k = 0  # background counter: cycles through the kinds
    recordings = []
    for r in range(n_rec):
        rows = list(cmd_rows[r * n_cmd:(r + 1) * n_cmd])
        if len(other_rows):
            rows += [other_rows[(r * n_other + j) % len(other_rows)] for j in range(n_other)]
        rows = [rows[i] for i in rng.permutation(len(rows))]
        parts, events, t = [], [], 0
        for row in rows:
            name, bg, level = kinds[k % len(kinds)]
            k += 1
            n_gap = int(round(rng.uniform(*gap) * RATE))
            seg = np.zeros(n_gap + RATE, np.float32)
            seg[n_gap:] = clips[row].astype(np.float32) / 32768.0
            if bg is not None:
                off = int(rng.integers(0, max(len(bg) - len(seg), 0) + 1))
                piece = np.resize(bg[off:off + len(seg)], len(seg))
                seg += piece * np.float32(10 ** (level / 20))
            events.append(Event(words[row], (t + n_gap) / RATE, bool(is_cmd[row]), name,
                                t / RATE))
            parts.append(seg)
            t += len(seg)
        tail = np.zeros(RATE, np.float32)  # one quiet second at the end
        audio = np.clip(np.concatenate(parts + [tail]), -1.0, 1.0)
        recordings.append(Recording(audio, events))
    return recordings


def load_split_clips(root, split: str, cache_dir=None, on_error: str = "raise"):
    from kws_tf.data.cache import open_decoded

    decoded = open_decoded(root, cache_dir=cache_dir, on_error=on_error, verbose=False,
                           needs=(split,), purpose="the streaming benchmark")
    s = decoded[split]
    clips = s.read(np.arange(len(s)))
    return clips, [decoded.labels[i] for i in s.labels]


def load_noise(root) -> dict:
    """{name: int16 recording} of the dataset's ``_background_noise_`` folder."""
    from kws_tf.data.tasks import background_noise

    root = Path(root)
    noise_list = background_noise(str(root))
    names = sorted(f.stem for f in (root / "_background_noise_").glob("*.wav"))
    if len(names) == len(noise_list):
        return dict(zip(names, noise_list))
    return {f"noise{i}": x for i, x in enumerate(noise_list)}


def split_recordings(root, commands, seed: int, cache_dir=None, passes: int = 1,
                     splits=("validation", "testing")) -> dict:
    """{"validation": [Recording], "testing": [...]} from those splits' clips (seeds ``seed``
    and ``seed + 1``).  ``passes`` > 1 lengthens them: every pass reuses each clip once more,
    with other gaps, neighbours, backgrounds and levels (its own seed)."""
    noise = load_noise(root)
    recordings = {}
    for split in splits:
        split_seed = seed + (1 if split == "testing" else 0)
        clips, words = load_split_clips(root, split, cache_dir)
        recordings[split] = [rec for p in range(int(passes))
                             for rec in build_recordings(clips, words, commands, noise,
                                                         split_seed + 1000 * p)]
        del clips
    return recordings


def describe(recordings: dict) -> dict:
    """Per split: how many recordings, minutes, hours, command clips and other clips."""
    return {split: {"recordings": len(r), "minutes": sum(x.seconds for x in r) / 60,
                    "hours": round(sum(x.seconds for x in r) / 3600, 3),
                    "command_clips": sum(e.command for x in r for e in x.events),
                    "other_clips": sum(not e.command for x in r for e in x.events)}
            for split, r in recordings.items()}


def write_recording(recording: Recording, path) -> Path:
    """``path`` (a WAV) and ``path.txt`` (one line per clip: start, word, command or not)."""
    from kws_tf import artifacts
    from kws_tf.data.audio import write_wav

    path = Path(path)
    with artifacts.atomic_path(path) as tmp:
        write_wav(tmp, recording.audio, RATE)
    lines = [f"{e.start:8.2f} s  {e.label:10s} {'command' if e.command else 'other word'}"
             f"  ({e.background})" for e in recording.events]
    artifacts.write_text(path.with_suffix(".txt"),
                         f"# {path.name}: {recording.seconds:.1f} s; clip starts (the word is "
                         "somewhere in the second after)\n" + "\n".join(lines) + "\n")
    return path


def main(argv=None) -> int:
    from kws_tf import cli
    from kws_tf.data import require_splits, resolve_data

    p = cli.ArgumentParser(prog="python -m kws_tf.detection.recordings",
                           description=cli.first_paragraph(__doc__))
    p.add_argument("data", help="a dataset folder in the Speech Commands layout")
    p.add_argument("--split", default="testing", choices=("validation", "testing"),
                   help="whose clips (default testing: speakers no model here trained on)")
    p.add_argument("--index", type=int, default=0,
                   help="which of the split's recordings (default 0; 20 command words each)")
    p.add_argument("--seed", type=int, default=0, help="the benchmark's seed (default 0)")
    p.add_argument("--commands", default=",".join(COMMANDS),
                   help="the words to spot (default the ten commands)")
    p.add_argument("--output", required=True, help="the WAV to write (and OUTPUT.txt beside)")
    args = p.parse_args(argv)
    if Path(args.output).suffix.lower() != ".wav":
        raise ValueError(f"--output {args.output}: give a .wav file name")
    root = resolve_data(args.data)
    require_splits(root)
    recordings = split_recordings(root, args.commands.split(","), args.seed,
                                  splits=(args.split,))[args.split]
    if not 0 <= args.index < len(recordings):
        raise ValueError(f"--index {args.index}: the {args.split} split makes "
                         f"{len(recordings)} recording(s) (0-{len(recordings) - 1})")
    rec = recordings[args.index]
    path = write_recording(rec, args.output)
    words = [e.label for e in rec.events if e.command]
    print(f"wrote {path} ({rec.seconds:.1f} s, {len(words)} command words: {' '.join(words)}) "
          f"and {path.with_suffix('.txt')}")
    return 0


if __name__ == "__main__":
    import sys

    from kws_tf import cli

    sys.exit(cli.run(main))
