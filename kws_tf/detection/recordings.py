"""The streaming benchmark's recordings: clips of one split strung together with gaps, each
gap and the clip after it on one background (digital silence or a background-noise recording
at one of several levels)."""
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
