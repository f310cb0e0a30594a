"""The decoded clip cache (kws_tf.data.cache) and training streamed from it."""
import errno
import os
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from conftest import REPO, crash_at_step, tiny_variant, write_wav
from kws_tf.data import DataError, DataWarning, load_arrays, open_decoded, stream_batches
from kws_tf.data import cache as kcache
from kws_tf.training import FitConfig, SplitArrays, TrainingData, fit, load_training_data

TINY = tiny_variant("gru1")
CFG = dict(sample_rate=8000, epochs=3, batch_size=5, verbose=0, jit_compile=False)


@pytest.fixture
def root(tiny_root, tmp_path):
    """A private copy of the tiny dataset (tests here edit it)."""
    dst = tmp_path / "data"
    shutil.copytree(tiny_root, dst)
    return dst


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def _folders(cache):
    return sorted(p.name for p in cache.iterdir() if p.is_dir()) if cache.exists() else []


# ----------------------------------------------------------------------------- key, reuse
def test_cache_holds_what_the_pipeline_decodes_and_is_reused(root, cache, capsys):
    d = open_decoded(root, cache_dir=cache)
    assert "decoding 42 clips" in capsys.readouterr().err
    for split in ("training", "validation", "testing"):
        x, y = load_arrays(root, split)
        part = d[split]
        assert part.audio.dtype == np.int16 and part.audio.shape == (len(y), 16000)
        np.testing.assert_array_equal(part.read(np.arange(len(y))) / np.float32(32768), x)
        np.testing.assert_array_equal(part.labels, y)
        rows = [3, 0, 3]
        np.testing.assert_array_equal(part.read(rows), part.audio[rows])  # order kept, repeats ok
    again = open_decoded(root, cache_dir=cache)
    assert again.folder == d.folder and "decoding" not in capsys.readouterr().err
    assert _folders(cache) == [d.folder.name]


def test_key_covers_lists_and_every_clip_path_size_and_mtime(root):
    key = kcache.dataset_key(root)
    assert kcache.dataset_key(root) == key
    clip = root / "go" / "00000001_nohash_0.wav"
    st = clip.stat()
    os.utime(clip, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    k_mtime = kcache.dataset_key(root)
    write_wav(clip, np.zeros(8000))  # other size
    k_size = kcache.dataset_key(root)
    lst = root / "validation_list.txt"
    lst.write_text(lst.read_text().replace("go/00000008_nohash_0.wav\n", ""))
    k_list = kcache.dataset_key(root)
    write_wav(root / "yes" / "ffffffff_nohash_0.wav", np.zeros(16000))
    k_new = kcache.dataset_key(root)
    assert len({key, k_mtime, k_size, k_list, k_new}) == 5


def test_edited_dataset_gets_a_new_cache(root, cache):
    first = open_decoded(root, cache_dir=cache)
    clip = root / "yes" / "00000000_nohash_0.wav"  # training
    write_wav(clip, np.full(16000, 0.25))
    second = open_decoded(root, cache_dir=cache)
    assert second.folder != first.folder
    row = second["training"].files.index("yes/00000000_nohash_0.wav")
    np.testing.assert_array_equal(second["training"].read([row])[0], np.full(16000, 8192, np.int16))


def test_one_cache_serves_commands_that_need_different_splits(root, cache, capsys):
    """Built for the test split alone (evaluate), it is the one training then opens; only a
    changed list or clip makes a new one, and a list created where there was none is a change."""
    (root / "validation_list.txt").unlink()
    with pytest.raises(DataError, match="the validation split is empty: there is no "
                                        "validation_list.txt; training needs one"):
        open_decoded(root, cache_dir=cache)
    assert _folders(cache) == []
    first = open_decoded(root, cache_dir=cache, needs=("testing",), purpose="evaluate")
    assert "decoding 42 clips" in capsys.readouterr().err  # every split, the empty one too
    assert len(first["validation"]) == 0 and len(first["training"]) == 33
    again = open_decoded(root, cache_dir=cache, needs=("training",), purpose="export")
    assert again.folder == first.folder and "decoding" not in capsys.readouterr().err
    # an empty list file gives the same splits as none, but it is a different folder state
    (root / "validation_list.txt").write_text("")
    empty_list = open_decoded(root, cache_dir=cache, needs=("testing",))
    assert empty_list.folder != first.folder
    (root / "validation_list.txt").write_text("go/00000008_nohash_0.wav\n")
    trained = open_decoded(root, cache_dir=cache)  # now training can open it
    assert trained.folder not in (first.folder, empty_list.folder)
    assert trained["validation"].files == ["go/00000008_nohash_0.wav"]
    assert len(_folders(cache)) == 3


def test_cache_dir_defaults_under_kws_tf_cache(root, tmp_path, monkeypatch):
    monkeypatch.setenv("KWS_TF_CACHE", str(tmp_path / "elsewhere"))
    d = open_decoded(root, verbose=False)
    assert d.folder.parent == tmp_path / "elsewhere" / "decoded"


# ----------------------------------------------------------------------------- faults
@pytest.mark.slow
def test_sigkill_mid_build_leaves_nothing_that_is_read_then_rebuilds(root, cache):
    script = textwrap.dedent(f"""
        import os, signal
        from kws_tf.data import cache as c
        update = c.Progress.update
        def update_then_die(self, n):
            update(self, n)
            if self.done >= 20:  # part of the clips written
                os.kill(os.getpid(), signal.SIGKILL)
        c.Progress.update = update_then_die
        c._BUILD_BATCH = 8  # small batches: die with the split half written
        c.open_decoded({str(root)!r}, cache_dir={str(cache)!r})
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    key = kcache.dataset_key(root)
    assert not (cache / key).exists()  # only the temporary folder is there
    assert [p.name for p in cache.iterdir() if p.name.startswith(f".{key}.tmp-")]
    d = open_decoded(root, cache_dir=cache)
    assert d.folder == cache / key
    assert not [p for p in cache.iterdir() if ".tmp-" in p.name]  # the killed build's leftovers
    x, _ = load_arrays(root, "training")
    np.testing.assert_array_equal(d["training"].read(np.arange(len(x))) / np.float32(32768), x)


@pytest.mark.parametrize("damage", ["truncate", "zero-tail", "meta", "labels"])
def test_damaged_cache_is_rebuilt_never_read(root, cache, damage, capsys):
    d = open_decoded(root, cache_dir=cache)
    expected = d["training"].audio.copy()
    if damage == "truncate":  # e.g. a disk that filled up under a non-atomic writer
        with open(d["training"].path, "r+b") as f:
            f.truncate(d["training"].path.stat().st_size - 1000)
    elif damage == "zero-tail":
        size = d["training"].path.stat().st_size
        with open(d["training"].path, "r+b") as f:
            f.seek(size - 4096)
            f.write(b"\0" * 4096)
    elif damage == "meta":
        (d.folder / "meta.json").write_text('{"format": 1, "spl')
    else:
        (d.folder / "training.labels.npy").write_bytes(b"garbage")
    capsys.readouterr()
    again = open_decoded(root, cache_dir=cache)
    assert "damaged: rebuilding" in capsys.readouterr().err
    np.testing.assert_array_equal(again["training"].audio, expected)


@pytest.mark.slow
def test_two_processes_building_at_once_build_once(root, cache):
    script = (f"from kws_tf.data import open_decoded\n"
              f"d = open_decoded({str(root)!r}, cache_dir={str(cache)!r})\n"
              f"print('FOLDER', d.folder, int(d['training'].audio.sum()))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    results = {line for out, _ in outs for line in out.splitlines() if line.startswith("FOLDER")}
    assert len(results) == 1
    assert sum(err.count("decoding 42 clips") for _, err in outs) == 1
    assert len(_folders(cache)) == 1


def test_full_disk_gives_one_error_and_leaves_no_partial_file(root, cache, monkeypatch):
    def no_space(*args, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(kcache, "_write_file", no_space)  # meta.json: the last file written
    with pytest.raises(DataError, match="disk full while writing the decoded cache.*nothing was kept"):
        open_decoded(root, cache_dir=cache)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.undo()
    monkeypatch.setattr(kcache.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 10))
    with pytest.raises(DataError, match="not enough disk space.*needs 0.00 GB"):
        open_decoded(root, cache_dir=cache)
    assert _folders(cache) == []


def test_unreadable_clip_follows_on_error_with_and_without_cache(root, cache):
    bad = root / "go" / "00000002_nohash_0.wav"  # training
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt ")  # truncated header
    with pytest.raises(DataError, match="00000002_nohash_0.wav.*--on-error skip"):
        open_decoded(root, cache_dir=cache)
    assert _folders(cache) == []  # stopped before decoding anything
    with pytest.warns(DataWarning, match="skipped 1 unreadable"):
        d = open_decoded(root, cache_dir=cache, on_error="skip")
    assert "go/00000002_nohash_0.wav" not in d["training"].files and len(d["training"]) == 23
    # the cache remembers what it left out: "raise" still stops on it, "skip" still says so
    with pytest.raises(DataError, match="00000002_nohash_0.wav"):
        open_decoded(root, cache_dir=cache)
    with pytest.warns(DataWarning, match="skipped 1 unreadable"):
        open_decoded(root, cache_dir=cache, on_error="skip")
    assert len(_folders(cache)) == 1


def test_missing_dataset_folder_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        open_decoded(tmp_path / "nope", cache_dir=tmp_path / "c")


# ----------------------------------------------------------------------------- streaming
def test_8khz_paths_give_the_same_batches(root, cache):
    """Pipeline resampling of cached 16 kHz batches == the old decode-time path == in the model."""
    from kws_tf import Resample

    d = open_decoded(root, cache_dir=cache)
    part = d["training"]
    order = np.random.default_rng(0).permutation(len(part))
    streamed = np.concatenate([x for x, _ in stream_batches(part, order, 7, 8000).as_numpy_iterator()])
    x8, _ = load_arrays(root, "training", sample_rate=8000)  # resampled once, before any cache
    np.testing.assert_allclose(streamed, x8[order], atol=1e-6, rtol=0)
    x16 = np.concatenate([x for x, _ in stream_batches(part, order, 7, 16000).as_numpy_iterator()])
    in_model = keras.ops.convert_to_numpy(Resample(16000, 8000)(x16))  # resample_on_device
    np.testing.assert_allclose(in_model, x8[order], atol=1e-6, rtol=0)


def test_stream_batches_keeps_order_partial_batch_and_shards(root, cache):
    part = open_decoded(root, cache_dir=cache)["training"]
    order = np.array([5, 1, 9, 0, 2, 7, 3])
    batches = list(stream_batches(part, order, 3, 16000).as_numpy_iterator())
    assert [len(y) for _, y in batches] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), part.labels[order])
    halves = [list(stream_batches(part, order, 3, 16000, shard=(i, 2)).as_numpy_iterator())
              for i in (0, 1)]
    for k, (x, y) in enumerate(batches):  # two workers together see exactly each batch
        np.testing.assert_array_equal(np.concatenate([halves[0][k][0], halves[1][k][0]]),
                                      np.concatenate([x[0::2], x[1::2]]))


def _in_memory(root, rate):
    splits = {s: SplitArrays(*load_arrays(root, s, sample_rate=rate))
              for s in ("training", "validation", "testing")}
    return TrainingData(root, ["down", "go", "yes"], rate, splits)


@pytest.mark.slow
def test_training_from_the_cache_matches_in_memory_and_resumes_exactly(root, cache, tmp_path):
    streamed = load_training_data(root, 8000, cache_dir=cache)
    assert isinstance(streamed["training"], kcache.DecodedSplit)
    full = fit(TINY, streamed, FitConfig(**CFG), output=tmp_path / "a")
    memory = fit(TINY, _in_memory(root, 8000), FitConfig(**CFG), output=tmp_path / "m")
    for a, b in zip(full.history, memory.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)

    with pytest.raises(KeyboardInterrupt):
        fit(TINY, streamed, FitConfig(**CFG), output=tmp_path / "b",
            callbacks=[crash_at_step(7)])  # mid epoch 2
    resumed = fit(TINY, load_training_data(root, 8000, cache_dir=cache), FitConfig(**CFG),
                  output=tmp_path / "b", resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for a, b in zip(full.history, resumed.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    assert resumed.metrics["testing"]["clips"] == 9


@pytest.mark.slow
def test_resampling_inside_the_step_trains_the_same_and_ships_a_plain_model(root, cache, tmp_path):
    data = load_training_data(root, 8000, cache_dir=cache)
    pipe = fit(TINY, data, FitConfig(**CFG, resample_on_device=False), output=tmp_path / "p")
    dev = fit(TINY, data, FitConfig(**CFG, resample_on_device=True), output=tmp_path / "d")
    assert dev.model.input_shape == (None, 16000) and pipe.model.input_shape == (None, 8000)
    for a, b in zip(pipe.history, dev.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    shipped = keras.models.load_model(tmp_path / "d" / "model.keras")
    assert shipped.input_shape == (None, 8000)
    assert dev.metrics["testing"]["accuracy"] == pytest.approx(pipe.metrics["testing"]["accuracy"])


@pytest.mark.slow
def test_train_and_evaluate_share_the_cache_given_by_cache_dir(root, cache, tmp_path, capsys):
    from kws_tf import evaluate, train

    out = tmp_path / "run"
    assert train.main(["gru1", "--sample-rate", "8000", "--batch-size", "8", "--epochs", "1",
                       "--max-steps-per-epoch", "1", "--quiet", "--no-jit-compile",
                       "--no-decision",  # the decision step is test_decision's
                       "--data", str(root), "--cache-dir", str(cache), "--output", str(out)]) == 0
    assert len(_folders(cache)) == 1 and "decoding 42 clips" in capsys.readouterr().err
    assert evaluate.main([str(out / "model.keras"), "--data", str(root), "--cache-dir", str(cache),
                          "--split", "validation"]) == 0
    captured = capsys.readouterr()
    assert "decoding" not in captured.err and "validation: accuracy" in captured.out
    assert len(_folders(cache)) == 1
