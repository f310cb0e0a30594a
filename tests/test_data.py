"""kws_tf.data: official splits, WAV decoding of every kind of input, the tf.data pipeline."""
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, wav_bytes, write_wav
from kws_tf import Resample
from kws_tf import data as kdata
from kws_tf.data import DataError, DataWarning

RATE = 16000


def layout(root, clips, validation=(), testing=()):
    """A Speech Commands folder: clips maps "word/file.wav" to float audio or raw bytes."""
    for rel, content in clips.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            write_wav(path, content)
    (root / "validation_list.txt").write_text("".join(f"{r}\n" for r in validation))
    (root / "testing_list.txt").write_text("".join(f"{r}\n" for r in testing))
    return root


def tone(freq, n=RATE, amp=0.5, rate=RATE):
    return amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)


def q16(x):
    """What a 16-bit file written by write_wav decodes to."""
    return np.round(np.asarray(x) * 32767) / 32768


# ------------------------------------------------------------------------------- splits
def test_official_split_semantics(tmp_path):
    layout(tmp_path, {
        "yes/b_nohash_0.wav": tone(300), "yes/a_nohash_0.wav": tone(310), "yes/c_nohash_0.wav": tone(320),
        "no/a_nohash_0.wav": tone(400), "no/b_nohash_1.wav": tone(410),
        "_background_noise_/white.wav": tone(50),  # not a word
    }, validation=["yes/c_nohash_0.wav"], testing=["./no/a_nohash_0.wav", ""])
    (tmp_path / "yes" / "README.md").write_text("not a clip")
    labels, splits = kdata.load_splits(tmp_path)
    assert labels == ["no", "yes"]
    assert splits == {"training": ["no/b_nohash_1.wav", "yes/a_nohash_0.wav", "yes/b_nohash_0.wav"],
                      "validation": ["yes/c_nohash_0.wav"], "testing": ["no/a_nohash_0.wav"]}


@pytest.mark.parametrize("case, expected", [
    ("both_lists", "in both validation_list.txt and testing_list.txt, e.g. yes/a.wav"),
    ("missing_clip", "testing_list.txt:2: yes/gone.wav does not exist"),
    ("no_folder", "dataset folder not found"),
    ("no_words", "no word folders"),
])
def test_split_errors_are_one_clear_line(tmp_path, case, expected):
    root = tmp_path / "data"
    if case != "no_folder":
        root.mkdir()
        clips = {} if case == "no_words" else {"yes/a.wav": tone(300), "yes/b.wav": tone(300)}
        testing = {"both_lists": ["yes/a.wav"], "missing_clip": ["yes/b.wav", "yes/gone.wav"]}
        layout(root, clips, validation=["yes/a.wav"] if clips else [], testing=testing.get(case, []))
    with pytest.raises(DataError) as e:
        kdata.load_splits(root)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_real_subset_counts(subset_root):
    labels, splits = kdata.load_splits(subset_root)
    assert len(labels) == 35 and labels == sorted(labels) and "_background_noise_" not in labels
    assert {k: len(v) for k, v in splits.items()} == {"training": 3386, "validation": 601, "testing": 961}


# ------------------------------------------------------------------------- WAV decoding
X = tone(440, 1000, amp=0.6) + tone(95, 1000, amp=0.3)


@pytest.mark.parametrize("bits, encoding, extensible, expected", [
    (8, "pcm", False, (np.round(X * 127)) / 128),
    (16, "pcm", False, np.round(X * 32767) / 32768),
    (24, "pcm", False, np.round(X * (2 ** 23 - 1)) / 2 ** 23),
    (32, "pcm", False, np.round(X * (2 ** 31 - 1)) / 2 ** 31),
    (32, "float", False, X.astype(np.float32)),
    (64, "float", False, X),
    (24, "pcm", True, np.round(X * (2 ** 23 - 1)) / 2 ** 23),
])
def test_read_wav_decodes_every_depth(tmp_path, bits, encoding, extensible, expected):
    path = tmp_path / "x.wav"
    path.write_bytes(wav_bytes(X, rate=22050, bits=bits, encoding=encoding, extensible=extensible))
    x, rate = kdata.read_wav(path)
    assert rate == 22050 and x.dtype == np.float32 and x.shape == X.shape
    np.testing.assert_allclose(x, expected, atol=1e-7)
    assert not kdata.wav_info(path).standard


def test_read_wav_averages_channels(tmp_path):
    path = tmp_path / "stereo.wav"
    path.write_bytes(wav_bytes(np.stack([X, -0.5 * X], axis=1)))
    x, _ = kdata.read_wav(path)
    np.testing.assert_allclose(x, (np.round(X * 32767) + np.round(-0.5 * X * 32767)) / 2 / 32768, atol=1e-7)


GOOD = wav_bytes(X)
BAD_FILES = {
    "empty file": (b"", "empty file (0 bytes)"),
    "no samples": (wav_bytes(np.zeros(0)), "empty WAV (no audio samples)"),
    "not a wav": (b"ID3\x03 this is an mp3, honestly" * 10, "not a WAV file"),
    "truncated": (GOOD[:len(GOOD) // 2], "truncated WAV"),
    "cut in header": (GOOD[:30], "truncated or corrupt WAV"),
    "compressed": (GOOD[:20] + struct.pack("<H", 2) + GOOD[22:], "unsupported WAV encoding (format tag 0x0002"),
    "odd rate": (wav_bytes(X, rate=16001), "unsupported sample rate 16001 Hz"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_fail_with_file_name(tmp_path, case):
    content, reason = BAD_FILES[case]
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(DataError) as e:
        kdata.decode_clip(path)
    assert str(e.value).startswith(f"{path}: ") and reason in str(e.value)


# ----------------------------------------------------------------------------- pipeline
@pytest.fixture()
def mixed_root(tmp_path):
    """Standard clips plus every convertible kind of file, and one truncated file."""
    clips = {
        "go/standard.wav": tone(300),
        "go/short.wav": tone(500, 9000),
        "go/long.wav": tone(700, 20000),
        "go/stereo.wav": wav_bytes(np.stack([tone(300), tone(900, amp=0.2)], axis=1)),
        "up/24bit.wav": wav_bytes(tone(350), bits=24),
        "up/8bit.wav": wav_bytes(tone(350), bits=8),
        "up/float.wav": wav_bytes(tone(350), bits=32, encoding="float"),
        "up/8khz.wav": wav_bytes(tone(350, 8000, rate=8000), rate=8000),
        "up/44khz.wav": wav_bytes(tone(350, 44100, rate=44100), rate=44100),
        "up/truncated.wav": GOOD[:len(GOOD) // 2],
    }
    return layout(tmp_path, clips)


def test_unreadable_clip_fails_fast_naming_it(mixed_root):
    with pytest.raises(DataError, match=r"up/truncated\.wav: truncated WAV .*--on-error skip"):
        kdata.make_dataset(mixed_root, "training")


def test_pipeline_converts_what_it_can_and_skips_and_reports_the_rest(mixed_root):
    with pytest.warns(DataWarning, match=r"skipped 1 unreadable clip\(s\): .*truncated\.wav"):
        audio, labels = kdata.load_arrays(mixed_root, "training", on_error="skip")
    with pytest.warns(DataWarning):
        files = kdata.scan(mixed_root, "training", on_error="skip").files
    got = dict(zip(files, audio))
    assert "up/truncated.wav" not in got and len(got) == 9
    assert audio.shape == (9, RATE) and audio.dtype == np.float32
    assert list(labels) == [0 if f.startswith("go/") else 1 for f in files]
    np.testing.assert_array_equal(got["go/standard.wav"], q16(tone(300)))
    np.testing.assert_array_equal(got["go/short.wav"], np.r_[q16(tone(500, 9000)), np.zeros(7000)])
    np.testing.assert_array_equal(got["go/long.wav"], q16(tone(700, 20000))[:RATE])
    stereo = (np.round(tone(300) * 32767) + np.round(tone(900, amp=0.2) * 32767)) / 2 / 32768
    np.testing.assert_allclose(got["go/stereo.wav"], stereo, atol=1 / 32768)
    for name in ("24bit", "8bit", "float"):
        np.testing.assert_allclose(got[f"up/{name}.wav"], tone(350), atol=1 / 120 if name == "8bit" else 1e-4)
    for name, rate in (("8khz", 8000), ("44khz", 44100)):
        x, _ = kdata.read_wav(mixed_root / f"up/{name}.wav")
        expected = np.asarray(Resample(rate, RATE)(x[None]))[0]
        np.testing.assert_allclose(got[f"up/{name}.wav"], expected, atol=1 / 32768)
        # and that is a 350 Hz tone at 16 kHz (away from the edges of the filter)
        np.testing.assert_allclose(got[f"up/{name}.wav"][200:-200], tone(350)[200:-200], atol=0.01)
    for rel, row in got.items():  # the predict CLI's decoder gives exactly the pipeline's input
        np.testing.assert_array_equal(kdata.decode_clip(mixed_root / rel), row)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """12 clips of 3 words; clip i has mean level 0.05 * (i + 1), so order can be checked."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    clips = {f"{w}/{i:02d}.wav": 0.05 * (i + 1) * np.sign(tone(200 + 100 * i)) + rng.normal(0, 0.01, RATE)
             for i, w in enumerate(["a", "b", "c"] * 4)}
    clips["_background_noise_/noise.wav"] = rng.uniform(-1, 1, 3 * RATE)
    return layout(root, clips, validation=["a/00.wav"])


def clip_ids(x):
    return [int(round(v / 0.05)) - 1 for v in np.abs(x).mean(axis=1)]


def test_8k_pipeline_equals_resample_of_each_clip(tiny_root):
    x16, y16 = kdata.load_arrays(tiny_root, "training")
    x8, y8 = kdata.load_arrays(tiny_root, "training", sample_rate=8000)
    assert x8.shape == (11, 8000)
    np.testing.assert_array_equal(y8, y16)
    np.testing.assert_allclose(x8, np.asarray(Resample(RATE, 8000)(x16)), atol=1e-6)
    for i in (0, 7):  # each clip alone, as the study resampled per clip
        np.testing.assert_allclose(x8[i], np.asarray(Resample(RATE, 8000)(x16[i])), atol=1e-6)


@pytest.mark.parametrize("orig, new, length", [(16000, 8000, 16000), (16000, 8000, 1001), (8000, 16000, 777)])
def test_tf_resample_equals_resample_layer(orig, new, length):
    """The plain-TF path used by tf.data when Keras runs on another backend."""
    x = np.random.default_rng(1).uniform(-1, 1, (3, length)).astype(np.float32)
    got = kdata.tf_resample(tf.constant(x), orig, new).numpy()
    np.testing.assert_allclose(got, np.asarray(Resample(orig, new)(x)), atol=1e-6)


@pytest.mark.slow
def test_pipeline_under_the_torch_backend(tiny_root, tmp_path):
    """With KERAS_BACKEND=torch tf.data cannot run keras.ops: the plain-TF resampler takes over."""
    pytest.importorskip("torch")
    code = (
        "import sys, numpy as np, keras\n"
        "from kws_tf import data as kdata\n"
        "assert keras.backend.backend() == 'torch'\n"
        "root, out = sys.argv[1:]\n"
        "x, _ = kdata.load_arrays(root, 'training', sample_rate=8000)\n"
        "batch = next(iter(kdata.make_dataset(root, 'training', 8000, batch_size=4, augment=True)))\n"
        "assert tuple(batch[0].shape) == (4, 8000)\n"
        "np.save(out, x)\n")
    env = dict(os.environ, KERAS_BACKEND="torch")
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_root), str(tmp_path / "x.npy")],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = kdata.load_arrays(tiny_root, "training", sample_rate=8000)[0]
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), expected, atol=1e-6)


def _epochs(ds, n=2):
    return [[(x.numpy(), y.numpy()) for x, y in ds] for _ in range(n)]


def _audio(epoch):
    return np.concatenate([x for x, _ in epoch])


def test_shuffled_batches_are_deterministic_for_a_seed(tiny_root):
    a = _epochs(kdata.make_dataset(tiny_root, "training", batch_size=4, seed=3))
    b = _epochs(kdata.make_dataset(tiny_root, "training", batch_size=4, seed=3))
    c = _epochs(kdata.make_dataset(tiny_root, "training", batch_size=4, seed=4))
    assert [len(x) for x, _ in a[0]] == [4, 4, 3]
    for ea, eb in zip(a, b):  # same seed: the same epochs, sample for sample
        np.testing.assert_array_equal(_audio(ea), _audio(eb))
    order = [clip_ids(_audio(e)) for e in (a[0], a[1], c[0])]
    assert sorted(order[0]) == list(range(1, 12))  # clip 0 (a/00) is in validation
    assert order[0] != order[1]  # reshuffled every epoch
    assert order[0] != order[2]  # another seed, another order
    for x, y in a[0]:  # labels travel with their clips: clip i is word i % 3
        np.testing.assert_array_equal(y, [i % 3 for i in clip_ids(x)])


def test_file_cache_is_reused_and_survives_an_interrupted_first_pass(tiny_root, tmp_path):
    first = _epochs(kdata.make_dataset(tiny_root, "training", shuffle=False, cache=tmp_path), 1)[0]
    index = list(tmp_path.glob("*.index"))
    assert len(index) == 1
    # A killed first pass leaves a lockfile and no index; TensorFlow then refuses the prefix.
    prefix = index[0].name[:-len(".index")]
    for f in tmp_path.iterdir():
        f.unlink()
    lock = tmp_path / f"{prefix}_0.lockfile"
    lock.write_text("")
    again = _epochs(kdata.make_dataset(tiny_root, "training", shuffle=False, cache=tmp_path), 1)[0]
    np.testing.assert_array_equal(_audio(again), _audio(first))
    assert (tmp_path / f"{prefix}.index").exists() and not lock.exists()
    np.testing.assert_array_equal(_audio(first), kdata.load_arrays(tiny_root, "training")[0])


def test_augmentation_is_off_by_default_and_seeded(tiny_root):
    clean = kdata.load_arrays(tiny_root, "training")[0]
    unshuffled = lambda **kw: _audio(_epochs(kdata.make_dataset(tiny_root, "training", shuffle=False, **kw), 1)[0])
    np.testing.assert_array_equal(unshuffled(), clean)
    a, b = unshuffled(seed=5, augment=True), unshuffled(seed=5, augment=True)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, clean) and not np.array_equal(a, unshuffled(seed=6, augment=True))
    assert np.abs(a).max() <= 1.0

    # Time shift only: each clip is its clean self moved by at most 100 ms, zeros filling in.
    shifted = unshuffled(seed=5, augment={"background_frequency": 0.0})
    shifts = []
    for x, s in zip(clean, shifted):
        lead, trail = np.argmax(s != 0), np.argmax(s[::-1] != 0)
        k = lead if lead else -trail
        assert abs(k) <= 1600
        np.testing.assert_array_equal(s, np.roll(x, k) * _inside(k))
        shifts.append(k)
    assert len(set(shifts)) > 3

    # Noise always, no shift: the difference is a slice of the noise recording, volume <= 0.1.
    noisy = unshuffled(seed=5, augment={"time_shift_ms": 0.0, "background_frequency": 1.0})
    noise = kdata.read_wav(tiny_root / "_background_noise_/noise.wav")[0].astype(np.float64)
    for d in (noisy - clean)[:3]:
        k = np.argmax(np.abs(np.correlate(noise, d, "valid")))
        window = noise[k:k + RATE]
        volume = window @ d / (window @ window)
        assert 0 < volume <= 0.1
        np.testing.assert_allclose(d, volume * window, atol=1e-6)


def _inside(k):
    m = np.ones(RATE)
    if k > 0:
        m[:k] = 0
    elif k < 0:
        m[k:] = 0
    return m


# ---------------------------------------------------------------------- resolve / CLI
def test_every_reader_reads_a_wav_the_same_way(tmp_path):
    """Clips, silence and augmentation noise, and predict's long recordings: one reader, via
    16 kHz, whatever the file's rate, channels and case of extension."""
    from kws_tf.data import audio, augment, tasks
    from kws_tf.predict import read_audio as predict_read

    x = tone(330, 30000, rate=22050) + tone(90, 30000, amp=0.2, rate=22050)
    path = tmp_path / "_background_noise_" / "REC.WAV"
    path.parent.mkdir()
    path.write_bytes(wav_bytes(np.stack([x, 0.5 * x], 1), rate=22050, bits=24))
    raw, rate = kdata.read_wav(path)
    at16 = Resample(22050, 16000)(raw[None])[0].numpy()
    at8 = Resample(16000, 8000)(at16[None])[0].numpy()
    np.testing.assert_allclose(audio.read_audio(path), at16, atol=1e-6)
    np.testing.assert_allclose(audio.read_audio(path, 8000), at8, atol=1e-6)
    np.testing.assert_array_equal(predict_read(path, 8000), audio.read_audio(path, 8000))
    np.testing.assert_array_equal(augment._noise(str(tmp_path), 8000)[0],
                                  audio.read_audio(path, 8000))
    np.testing.assert_array_equal(tasks.background_noise(str(tmp_path))[0],
                                  audio.to_int16(audio.read_audio(path)))
    np.testing.assert_array_equal(audio.clip_int16(path),
                                  audio.to_int16(audio.read_audio(path)[:RATE]))


def test_resolve_data(tmp_path, monkeypatch, tiny_root):
    monkeypatch.setenv("KWS_TF_DATA", str(tmp_path / "nothing"))
    with pytest.raises(DataError, match="python -m kws_tf.data download.*--data synthetic"):
        kdata.resolve_data(None)
    monkeypatch.setenv("KWS_TF_DATA", str(tiny_root))
    assert kdata.resolve_data(None) == tiny_root == kdata.default_data_root()
    assert kdata.resolve_data(str(tiny_root)) == tiny_root
    with pytest.raises(DataError, match="dataset folder not found: .*missing"):
        kdata.resolve_data(str(tmp_path / "missing"))


def test_stats_counts_splits_words_and_unreadable_files(mixed_root, capsys):
    from kws_tf.data.__main__ import main

    assert main(["stats", str(mixed_root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "2 words" in out[0]
    # 9 readable clips: 7 of 1 s, one 0.5625 s, one 1.25 s; 6 need converting; 1 unreadable
    assert out[2].split() == ["training", "9", "0.00", "0.98", "0.56", "1.25", "1", "6", "1"]
    assert any(line.startswith("unreadable: ") and "up/truncated.wav: truncated WAV" in line for line in out)


@pytest.mark.slow
def test_cli_help():
    proc = subprocess.run([sys.executable, "-m", "kws_tf.data", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0
    for command in ("download", "synthetic", "stats"):
        assert command in proc.stdout
