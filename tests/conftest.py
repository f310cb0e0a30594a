import os
import pathlib
import wave

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Decoded-clip caches and generated data of this test session stay out of ~/.cache.
if "KWS_TF_CACHE" not in os.environ:
    import tempfile

    os.environ["KWS_TF_CACHE"] = tempfile.mkdtemp(prefix="kws-tf-test-cache-")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SUBSET = SHARED / "data" / "speech_commands_subset"
RESAMPLE_REFERENCE = SHARED / "testdata" / "resample_reference.npz"


@pytest.fixture(scope="session")
def subset_root():
    if not SUBSET.is_dir():
        pytest.skip(f"real Speech Commands subset not found at {SUBSET}")
    return SUBSET


def write_wav(path, audio, rate=16000):
    """A 16-bit mono WAV, as in Speech Commands."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


TINY_WORDS = ("down", "go", "yes")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """3 words of tones in the Speech Commands layout: 8 train, 3 val, 3 test clips each."""
    root = tmp_path_factory.mktemp("tiny_speech_commands")
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    val, test = [], []
    for w, word in enumerate(TINY_WORDS):
        for i in range(14):
            audio = 0.4 * np.sin(2 * np.pi * (300 + 250 * w) * t * (1 + 0.01 * i))
            audio += rng.normal(0, 0.05, t.shape)
            rel = f"{word}/{i:08x}_nohash_0.wav"
            write_wav(root / rel, audio[: 16000 - 500 * (i % 3)])  # some clips are short
            (val if i in (8, 9, 10) else test if i >= 11 else []).append(rel)
    write_wav(root / "_background_noise_" / "white_noise.wav", rng.normal(0, 0.3, 32000))
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    return root


@pytest.fixture(scope="session")
def trained(subset_root):
    """The small model trained on real clips (tests/_small_kws.py), shared by export and predict."""
    import _small_kws

    return _small_kws.trained_run(subset_root)


@pytest.fixture(scope="session")
def exported(subset_root):
    """Every export format of that model, made once."""
    import _small_kws

    return _small_kws.exported(subset_root)
