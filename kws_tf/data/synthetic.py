"""An embedded Speech Commands stand-in made of real synthesized speech (eSpeak NG).

Every (word, speaker) is one clip; a "speaker" is an eSpeak NG accent and voice variant with
its own speed, pitch and pitch range, and says each word a little differently (speed and pitch
vary per clip).  Clips differ in level, position and background noise.  Splits are
speaker-disjoint like the real dataset's.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .audio import CLIP_SAMPLES, SAMPLE_RATE, DataError, resample, write_wav
from .splits import is_dataset

# The 35 words of Speech Commands v0.02.
WORDS = ("backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward",
         "four", "go", "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on",
         "one", "right", "seven", "sheila", "six", "stop", "three", "tree", "two", "up", "visual",
         "wow", "yes", "zero")
# 80 speakers: 64 train, 8 validate, 8 test (2,800 clips, 90 MB, built in ~15 s).  What
# `--data synthetic` trains with on it: kws_tf.training.synthetic_recipe.SYNTHETIC_RECIPE.
DEFAULTS = {"words": WORDS, "clips_per_word": 80, "seed": 0}
GENERATOR_VERSION = 2  # bump when the output for the same arguments changes
# eSpeak NG's English accents: US, British, Scottish, RP, Caribbean, New York, Lancaster,
# West Midlands.
ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc",
           "en-gb-x-gbclan", "en-gb-x-gbcwmd")
# eSpeak NG's plain male and female voice variants.  (Adding its ~70 others, which add
# robotic, whispered or exaggerated effects, made gru4 need far more training than the quick
# start has to reach the same accuracy on held-out speakers.)
VOICE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
NOISES = ("white_noise", "pink_noise", "brown_noise", "hum")
NOISE_SECONDS = 15
# Ranges drawn from, uniformly: per speaker, words per minute, pitch and pitch range (eSpeak's
# 0-100 scales); per clip, the change of speed and of pitch, the peak level (log-uniform) and
# the speech-to-noise ratio in dB.
WPM, PITCH, PITCH_RANGE = (120, 220), (10, 90), (10, 100)
SPEED_CHANGE, PITCH_CHANGE = (0.88, 1.12), (-6, 6)
PEAK, SNR_DB = (0.1, 0.9), (20.0, 45.0)


class SynthesisError(DataError):
    """eSpeak NG could not run here."""


@dataclasses.dataclass(frozen=True)
class Speaker:
    id: str  # 8 hex digits, like the dataset's speaker hashes
    voice: str  # eSpeak NG "accent+variant"
    wpm: int
    pitch: int
    pitch_range: int


def make_speakers(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng([seed, 1])
    # cycle through all voice variants before repeating
    variants = list(rng.permutation(VOICE_VARIANTS))
    return [Speaker(hashlib.sha1(f"kws_tf-synthetic:{seed}:{i}".encode()).hexdigest()[:8],
                    f"{ACCENTS[rng.integers(len(ACCENTS))]}+{variants[i % len(variants)]}",
                    int(rng.integers(WPM[0], WPM[1] + 1)),
                    int(rng.integers(PITCH[0], PITCH[1] + 1)),
                    int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)))
            for i in range(n)]


def _clip_rng(seed: int, stream: int, speaker: Speaker, word: str):
    """The random draws of one clip: the same for the same (seed, speaker, word)."""
    return np.random.default_rng([seed, stream, int(speaker.id, 16),
                                  int(hashlib.sha1(word.encode()).hexdigest()[:8], 16)])


def _utterance(seed: int, speaker: Speaker, word: str) -> tuple:
    """One word as the speaker says it this time: speed and pitch vary a little around theirs."""
    rng = _clip_rng(seed, 4, speaker, word)
    wpm = int(round(speaker.wpm * rng.uniform(*SPEED_CHANGE)))
    pitch = int(np.clip(speaker.pitch + rng.integers(PITCH_CHANGE[0], PITCH_CHANGE[1] + 1), 0, 100))
    return (word, speaker.voice, wpm, pitch, speaker.pitch_range)


def held_out(n: int) -> int:
    """Speakers per held-out split: 10% each, at least one when there are 3 or more."""
    return max(1, round(0.1 * n)) if n >= 3 else 0


def synthetic(dest, words=WORDS, clips_per_word: int = 20, seed: int = 0) -> Path:
    """Write a small dataset in the exact Speech Commands layout into ``dest``; return it.

    ``clips_per_word`` speakers each say every word: 10% of the speakers (at least one) form
    validation_list.txt, 10% testing_list.txt.  Clips are 1 s, 16 kHz, 16-bit mono, the word at
    a random position and level (peak 0.1-0.9) over background noise (white, pink, brown or
    hum, 20-45 dB below the speech); ``_background_noise_`` gets 15 s of each of those noises.
    Deterministic for the same arguments.
    """
    words = [str(w) for w in words]
    bad = [w for w in words if not re.fullmatch(r"[a-z0-9][a-z0-9'-]*", w)]
    if bad or not words or len(set(words)) != len(words):
        raise DataError(f"words must be distinct lowercase words, got {bad or words}")
    if int(clips_per_word) < 1:
        raise DataError(f"clips_per_word must be at least 1, got {clips_per_word}")
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(f"{dest} already exists; delete it or choose another folder")
    speakers = make_speakers(int(clips_per_word), seed)
    raw, rate = _espeak([_utterance(seed, s, w) for s in speakers for w in words])
    speech = _to_16k([_trim(x) for x in raw], rate)

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.building-", dir=dest.parent))
    try:
        n_held = held_out(len(speakers))
        first_val = len(speakers) - 2 * n_held
        lists = {"validation": [], "testing": []}
        for i, speaker in enumerate(speakers):
            split = None if i < first_val else "validation" if i < first_val + n_held else "testing"
            for j, word in enumerate(words):
                rel = f"{word}/{speaker.id}_nohash_0.wav"
                (tmp / word).mkdir(exist_ok=True)
                write_wav(tmp / rel, _place(speech[i * len(words) + j], seed, speaker, word))
                if split:
                    lists[split].append(rel)
        for split, name in (("validation", "validation_list.txt"), ("testing", "testing_list.txt")):
            (tmp / name).write_text("".join(f"{rel}\n" for rel in sorted(lists[split])))
        (tmp / "_background_noise_").mkdir()
        for name in NOISES:
            write_wav(tmp / "_background_noise_" / f"{name}.wav", _noise(name, seed))
        info = {"generator": "kws_tf.data.synthetic", "version": GENERATOR_VERSION,
                "words": words, "clips_per_word": int(clips_per_word), "seed": int(seed),
                "speakers": [dataclasses.asdict(s) for s in speakers]}
        (tmp / "synthetic.json").write_text(json.dumps(info, indent=1) + "\n")
        if dest.exists():
            dest.rmdir()  # checked empty above
        try:
            os.replace(tmp, dest)
        except OSError:
            if not is_dataset(dest):  # another process built the same folder first: use it
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _espeak(utterances):
    """Synthesize in a fresh process (see _espeak.py): (list of int16 arrays, sample rate)."""
    worker = Path(__file__).with_name("_espeak.py")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.npz"
        try:
            proc = subprocess.run([sys.executable, str(worker), str(out)],
                                  input=json.dumps({"utterances": utterances}), text=True,
                                  capture_output=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            proc, reason = None, str(e)
        if proc is not None:
            lines = proc.stderr.strip().splitlines()
            reason = lines[-1] if lines else f"exit status {proc.returncode}"
        if proc is None or proc.returncode != 0 or not out.exists():
            raise SynthesisError(f"cannot synthesise speech with eSpeak NG (espeakng-loader): "
                                 f"{reason}; use a Speech Commands folder instead (--data PATH)")
        with np.load(out) as z:
            audio, lengths, rate = z["audio"], z["lengths"], int(z["sample_rate"])
    return np.split(audio, np.cumsum(lengths)[:-1]), rate


def _trim(x: np.ndarray) -> np.ndarray:
    """Drop the leading/trailing silence eSpeak adds (below 2% of the peak)."""
    x = x.astype(np.float32) / 32768.0
    loud = np.flatnonzero(np.abs(x) > 0.02 * max(np.abs(x).max(), 1e-6))
    return x[loud[0]:loud[-1] + 1] if len(loud) else x


def _to_16k(clips: list, rate: int) -> list:
    """Resample all clips in one batch with torchaudio's resampler (kws_tf.Resample)."""
    from ..layers.resample import resampled_length

    batch = np.zeros((len(clips), max(len(c) for c in clips)), np.float32)
    for i, c in enumerate(clips):
        batch[i, :len(c)] = c
    out = resample(batch, rate, SAMPLE_RATE)
    return [out[i, :resampled_length(len(c), rate, SAMPLE_RATE)] for i, c in enumerate(clips)]


def _place(speech: np.ndarray, seed: int, speaker: Speaker, word: str) -> np.ndarray:
    """The word at a random offset and level in 1 s over background noise, like a recording."""
    rng = _clip_rng(seed, 2, speaker, word)
    speech = speech[:CLIP_SAMPLES] / max(np.abs(speech).max(), 1e-6)
    speech = speech * np.exp(rng.uniform(*np.log(PEAK)))  # peak level
    start = int(rng.integers(0, CLIP_SAMPLES - len(speech) + 1))
    noise = _colored(NOISES[rng.integers(len(NOISES))], rng, CLIP_SAMPLES)
    snr_db = rng.uniform(*SNR_DB)
    rms = np.sqrt(np.mean(speech ** 2))
    clip = noise * (rms / 10 ** (snr_db / 20) / max(np.sqrt(np.mean(noise ** 2)), 1e-12))
    clip[start:start + len(speech)] += speech
    return np.clip(clip, -1.0, 1.0)


def _noise(name: str, seed: int) -> np.ndarray:
    """One ``_background_noise_`` recording: NOISE_SECONDS of ``name``, peak 0.25."""
    x = _colored(name, np.random.default_rng([seed, 3, NOISES.index(name)]),
                 NOISE_SECONDS * SAMPLE_RATE)
    return 0.25 * x / np.abs(x).max()


def _colored(name: str, rng, n: int) -> np.ndarray:
    """``n`` samples of white, pink (1/f power) or brown (1/f^2) noise, or mains hum."""
    white = rng.standard_normal(n)
    if name == "hum":  # 50 Hz mains hum with harmonics, over some hiss
        t = np.arange(n) / SAMPLE_RATE
        return sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 2 * np.pi)) / k
                   for k in range(1, 6)) + 0.2 * white
    if name == "white_noise":
        return white
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    power = 1 if name == "pink_noise" else 2
    return np.fft.irfft(np.fft.rfft(white) / np.maximum(f, 20.0) ** (power / 2), n)
