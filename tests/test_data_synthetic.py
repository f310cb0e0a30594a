"""kws_tf.data.synthetic: real eSpeak NG speech in the Speech Commands layout."""
import sys

import numpy as np
import pytest

from kws_tf import data as kdata
from kws_tf.data import SYNTHETIC_DEFAULTS, DataError, SynthesisError
from kws_tf.data.synthetic import (ACCENTS, PEAK, PITCH, SNR_DB, VOICE_VARIANTS, WPM, _place,
                                   held_out, make_speakers)

WORDS = ("yes", "no", "up")
SMALL = {"words": WORDS, "clips_per_word": 4, "seed": 0}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return kdata.synthetic(tmp_path_factory.mktemp("synth") / "sc", **SMALL)


def test_layout_splits_and_format(synth):
    labels, splits = kdata.load_splits(synth)
    assert labels == ["no", "up", "yes"]
    # 4 speakers: 2 train, 1 validation, 1 test; each says every word.
    assert {k: len(v) for k, v in splits.items()} == {"training": 6, "validation": 3, "testing": 3}
    speakers = {s: {rel.split("/")[1].split("_")[0] for rel in files} for s, files in splits.items()}
    assert [len(v) for v in speakers.values()] == [2, 1, 1]
    assert not (speakers["training"] & speakers["validation"]) and not (speakers["training"] & speakers["testing"])
    for rel in sum(splits.values(), []):
        info = kdata.wav_info(synth / rel)
        assert info.standard and info.frames == 16000  # 16-bit mono 16 kHz, exactly 1 s
    noise = sorted(p.name for p in (synth / "_background_noise_").iterdir())
    assert noise == ["brown_noise.wav", "hum.wav", "pink_noise.wav", "white_noise.wav"]
    assert all(kdata.wav_info(synth / "_background_noise_" / n).seconds >= 10 for n in noise)


def _envelope(x, frame=160):
    return np.sqrt((x[: len(x) // frame * frame].reshape(-1, frame) ** 2).mean(axis=1))


def test_clips_are_speech_and_differ_between_speakers(synth):
    audio, labels = kdata.load_arrays(synth, "training")
    assert audio.shape == (6, 16000)
    for x in audio:
        env = _envelope(x)
        loud = env > 0.1 * env.max()
        # a word: a loud stretch of 0.15-0.95 s well above the noise floor, in 16 kHz speech band
        assert 0.15 <= loud.mean() <= 0.95 and env.max() > 30 * np.median(env[~loud])
        spectrum = np.abs(np.fft.rfft(x)) ** 2
        assert spectrum[: len(spectrum) // 2].sum() > 0.9 * spectrum.sum()  # mostly below 4 kHz
    # Speakers are voices: each has its own pitch in every word.  The two training speakers of
    # seed 0 are eSpeak's "m1" at pitch 13 (~60 Hz) and "f1" at pitch 50 (~165 Hz); the pitch
    # of each clip varies a little around the speaker's.
    assert [s.voice.split("+")[1] for s in make_speakers(4)[:2]] == ["m1", "f1"]
    pitch = np.array([[_f0(x) for x in audio[labels == word]] for word in range(3)])  # (word, speaker)
    assert pitch[:, 1].min() > 2 * pitch[:, 0].max()


def test_clip_level_position_and_noise():
    """_place: speech at a peak in PEAK, anywhere in the second, over noise SNR_DB below it."""
    speaker = make_speakers(1)[0]
    t = np.arange(6000) / 16000
    speech = np.sin(2 * np.pi * 200 * t) * np.hanning(len(t))
    rms = lambda x: np.sqrt(np.mean(x ** 2))  # noqa: E731
    peaks, starts, snrs = [], [], []
    for word in WORDS + ("cat", "dog", "bed", "bird", "go", "on", "off", "left", "right"):
        clip = _place(speech, 0, speaker, word)
        start = int(np.argmax(np.abs(np.correlate(clip, speech, "valid"))))
        scale = np.dot(clip[start:start + len(t)], speech) / np.dot(speech, speech)
        noise = np.concatenate([clip[:start], clip[start + len(t):]])
        peaks.append(scale)
        starts.append(start)
        snrs.append(20 * np.log10(rms(scale * speech) / rms(noise)))
    assert PEAK[0] * 0.98 <= min(peaks) and max(peaks) <= PEAK[1] * 1.02
    assert SNR_DB[0] - 1 <= min(snrs) and max(snrs) <= SNR_DB[1] + 1
    assert np.ptp(snrs) > 10 and np.ptp(np.log(peaks)) > 1 and np.ptp(starts) > 4000  # they vary
    assert np.array_equal(_place(speech, 0, speaker, "yes"), _place(speech, 0, speaker, "yes"))


def test_default_set_size_and_speakers():
    """The default set (what --data synthetic builds): 80 speakers, 64/8/8, every voice variant
    and accent used, speakers distinct."""
    speakers = make_speakers(SYNTHETIC_DEFAULTS["clips_per_word"], SYNTHETIC_DEFAULTS["seed"])
    assert len(speakers) == 80 and held_out(80) == 8 and len(SYNTHETIC_DEFAULTS["words"]) == 35
    assert len({s.id for s in speakers}) == 80
    assert len({(s.voice, s.wpm, s.pitch, s.pitch_range) for s in speakers}) == 80
    assert {s.voice.split("+")[1] for s in speakers} == set(VOICE_VARIANTS)
    assert {s.voice.split("+")[0] for s in speakers} == set(ACCENTS)
    assert all(WPM[0] <= s.wpm <= WPM[1] and PITCH[0] <= s.pitch <= PITCH[1] for s in speakers)


def _f0(x, rate=16000):
    """Median pitch (Hz) of the loud frames: autocorrelation peak between 50 and 400 Hz."""
    frames = x[: len(x) // 1024 * 1024].reshape(-1, 1024)
    energy = (frames ** 2).mean(axis=1)
    lo, hi = rate // 400, rate // 50
    peaks = []
    for f in frames[energy > 0.3 * energy.max()]:
        ac = np.correlate(f - f.mean(), f - f.mean(), "full")[len(f) - 1:]
        peaks.append(rate / (lo + np.argmax(ac[lo:hi])))
    return np.median(peaks)


def test_deterministic_for_a_seed(synth, tmp_path):
    again = kdata.synthetic(tmp_path / "again", **SMALL)
    other = kdata.synthetic(tmp_path / "other", **{**SMALL, "seed": 1})
    files = sorted(p.relative_to(synth) for p in synth.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (synth / rel).read_bytes() == (again / rel).read_bytes(), rel
    names = lambda root: {p.name for p in (root / "yes").iterdir()}
    assert not names(synth) & names(other)  # another seed: other speakers
    assert not np.array_equal(kdata.load_arrays(synth, "training")[0], kdata.load_arrays(other, "training")[0])


def test_refuses_to_overwrite(synth):
    with pytest.raises(DataError, match="already exists"):
        kdata.synthetic(synth, **SMALL)


def test_resolve_data_synthetic_builds_once_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KWS_TF_CACHE", str(tmp_path))
    monkeypatch.setitem(kdata.SYNTHETIC_DEFAULTS, "words", ("on", "off"))
    monkeypatch.setitem(kdata.SYNTHETIC_DEFAULTS, "clips_per_word", 3)
    root = kdata.resolve_data("synthetic")
    assert root.parent == tmp_path and root.name.startswith("synthetic-")
    assert kdata.load_splits(root)[0] == ["off", "on"]
    stamp = (root / "synthetic.json").stat().st_mtime_ns
    assert kdata.resolve_data("synthetic") == root
    assert (root / "synthetic.json").stat().st_mtime_ns == stamp  # not rebuilt


def test_a_broken_synthesizer_names_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the eSpeak worker process fails
    with pytest.raises(SynthesisError, match=r"cannot synthesise speech with eSpeak NG.*--data PATH"):
        kdata.synthetic(tmp_path / "sc", **SMALL)
    assert not (tmp_path / "sc").exists()
