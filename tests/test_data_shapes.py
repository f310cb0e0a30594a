"""Every shape of data folder a user brings: each works as docs/data.md says or ends in one line.

The folders are made here: a few short tones per word, in the Speech Commands layout.  Models
are untrained (their scores are never checked, only what evaluate scores and says).
"""
import json
import os
import unicodedata

import numpy as np
import pytest

from conftest import tiny_variant, wav_bytes, write_wav
from kws_tf import artifacts, cli, evaluate
from kws_tf import data as kdata
from kws_tf.data import DataError, DataWarning, open_decoded, read_splits, require_splits
from kws_tf.data.audio import clip_int16
from kws_tf.data.synthetic import WORDS as WORDS_35
from kws_tf.data.tasks import STANDARD_WORDS, background_noise, task_labels

RATE = 16000


def tone(freq, n=RATE // 4):
    return 0.4 * np.sin(2 * np.pi * freq * np.arange(n) / RATE)


def make_folder(root, clips, validation=None, testing=None, noise=True):
    """``clips``: relative paths (a tone each); a list of None writes no list file."""
    for i, rel in enumerate(clips):
        write_wav(root / rel, tone(200 + 40 * i))
    if noise:
        write_wav(root / "_background_noise_" / "white.wav",
                  np.random.default_rng(0).normal(0, 0.2, 2 * RATE))
    for name, entries in (("validation_list.txt", validation), ("testing_list.txt", testing)):
        if entries is not None:
            (root / name).write_text("".join(f"{e}\n" for e in entries))
    return root


def clips_of(words, n=3):
    return [f"{w}/{i}_nohash_0.wav" for w in words for i in range(n)]


def folders(cache):
    return sorted(p.name for p in cache.iterdir() if p.is_dir()) if cache.exists() else []


def save_model(path, labels):
    from kws_tf.models import build_model

    artifacts.save_model(build_model(tiny_variant("gru1"), 8000, num_classes=len(labels)), path,
                         labels, variant="tiny")
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Untrained models: 35 words (the study's task) and 12 labels (--words, TensorFlow's task)."""
    d = tmp_path_factory.mktemp("models")
    return {"35": save_model(d / "m35.keras", sorted(WORDS_35)),
            "12": save_model(d / "m12.keras", task_labels(STANDARD_WORDS))}


def run_cli(main, argv, capsys):
    """(exit code, stdout, stderr) of a command run the way its __main__ runs it."""
    code = cli.run(main, argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(err):
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------- a test-only folder
def test_test_only_folder_evaluates_a_35_word_and_a_12_label_model(tmp_path, models, capsys):
    root = make_folder(tmp_path / "mytests", clips_of(["yes", "no", "up"]), validation=[],
                       testing=clips_of(["yes", "no", "up"]))
    cache = tmp_path / "cache"
    code, out, err = run_cli(evaluate.main, [models["35"], "--data", str(root), "--cache-dir",
                                             str(cache), "--split", "testing"], capsys)
    assert code == 0, err
    assert "testing: accuracy" in out and "(9 clips" in out
    # what evaluate does with the 32 words the folder lacks, in one line
    note = [ln for ln in err.splitlines() if ln.startswith("note:")]
    assert len(note) == 1 and "32 word(s) with no clip: backward, bed, bird and 29 more" in note[0]
    assert "decoding 9 clips" in err and len(folders(cache)) == 1

    out_dir = tmp_path / "ev12"
    code, out, err = run_cli(evaluate.main, [models["12"], "--data", str(root), "--cache-dir",
                                             str(cache), "--output", str(out_dir)], capsys)
    assert code == 0, err
    assert "testing: accuracy" in out and "9 words, 0 unknown, 1 silence" in out
    assert "decoding" not in err  # the cache the first command built
    assert "_unknown_ (every word of the data is one of the model's)" in err
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["clips_by_kind"] == {"words": 9, "unknown": 0, "silence": 1}
    assert len(folders(cache)) == 1

    # training the same folder: one line naming the split and the list that decides it,
    # before anything is decoded or written
    with pytest.raises(DataError) as e:
        open_decoded(root, cache_dir=cache)
    assert str(e.value) == (f"{root}: the training split is empty: every clip is named in "
                            "validation_list.txt or testing_list.txt; training needs one")
    assert len(folders(cache)) == 1


def test_an_empty_split_fails_a_command_that_needs_it_with_nothing_written(tmp_path, models, capsys):
    root = make_folder(tmp_path / "d", clips_of(["yes", "no"]), validation=[], testing=[])
    cache, out_dir = tmp_path / "cache", tmp_path / "ev"
    code, out, err = run_cli(evaluate.main, [models["35"], "--data", str(root), "--cache-dir",
                                             str(cache), "--output", str(out_dir)], capsys)
    assert code == 2
    assert one_error_line(err) == (f"error: {root}: the testing split is empty: testing_list.txt "
                                   "is empty; evaluate --split testing needs one")
    assert not out_dir.exists() and not cache.exists()
    # the split that has the clips evaluates
    code, out, err = run_cli(evaluate.main, [models["35"], "--data", str(root), "--cache-dir",
                                             str(cache), "--split", "training"], capsys)
    assert code == 0 and "training: accuracy" in out and "(6 clips" in out


# --------------------------------------------------------------------- 1. one list file
def test_only_testing_list_gives_an_empty_validation_split(tmp_path):
    clips = clips_of(["yes", "no"])
    root = make_folder(tmp_path / "d", clips, validation=None, testing=clips[:2])
    s = read_splits(root)
    assert s.lists == {"validation": "missing", "testing": "ok"}
    assert s.splits == {"training": sorted(clips[2:]), "validation": [],
                        "testing": sorted(clips[:2])}
    with pytest.raises(DataError) as e:
        require_splits(root)
    assert str(e.value) == (f"{root}: the validation split is empty: there is no "
                            "validation_list.txt; training needs one")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="validation split is empty"):
        open_decoded(root, cache_dir=cache)
    assert not cache.exists()  # refused before building anything
    d = open_decoded(root, cache_dir=cache, needs=("testing",), verbose=False)
    assert len(d["testing"]) == 2 and len(d["validation"]) == 0 and len(d["training"]) == 4


def test_only_validation_list_trains_and_refuses_testing(tmp_path):
    clips = clips_of(["yes", "no"])
    root = make_folder(tmp_path / "d", clips, validation=clips[:2], testing=None)
    assert require_splits(root).lists == {"validation": "ok", "testing": "missing"}
    with pytest.raises(DataError) as e:
        require_splits(root, ("testing",), "evaluate --split testing")
    assert str(e.value) == (f"{root}: the testing split is empty: there is no testing_list.txt; "
                            "evaluate --split testing needs one")
    d = open_decoded(root, cache_dir=tmp_path / "cache", verbose=False)  # what training opens
    assert (len(d["training"]), len(d["validation"]), len(d["testing"])) == (4, 2, 0)
    # an empty split streams as no batch at all (the fit path's test pass)
    assert list(kdata.stream_batches(d["testing"], [], 4, 8000).as_numpy_iterator()) == []
    # make_dataset on the empty split: one line, no "needs" (no command is named)
    with pytest.raises(DataError) as e:
        kdata.make_dataset(root, "testing")
    assert str(e.value) == f"{root}: the testing split is empty: there is no testing_list.txt"


# --------------------------------------------------------------------------- 2. no lists
def test_no_list_files_puts_every_clip_in_training_and_says_both_lists_are_expected(tmp_path,
                                                                                     models, capsys):
    clips = clips_of(["yes", "no"])
    root = make_folder(tmp_path / "d", clips, validation=None, testing=None)
    s = read_splits(root)
    assert s.splits == {"training": sorted(clips), "validation": [], "testing": []}
    with pytest.raises(DataError) as e:
        require_splits(root)
    assert "the validation split is empty: there is neither validation_list.txt nor " \
           "testing_list.txt (a Speech Commands folder has both" in str(e.value)
    code, out, err = run_cli(evaluate.main, [models["35"], "--data", str(root), "--cache-dir",
                                             str(tmp_path / "cache")], capsys)
    assert code == 2
    line = one_error_line(err)
    assert "the testing split is empty: there is neither validation_list.txt nor " \
           "testing_list.txt" in line and "every clip is in the training split" in line


# ----------------------------------------------------------------- 3. what lists contain
def test_list_lines_with_windows_endings_blanks_prefixes_and_spaces(tmp_path):
    clips = clips_of(["yes", "no"])
    root = make_folder(tmp_path / "d", clips, validation=[], testing=None)
    # a byte order mark, CRLF, blank lines, ./ (twice), a Windows separator, spaces and tabs
    (root / "testing_list.txt").write_bytes(
        b"\xef\xbb\xbfyes/0_nohash_0.wav\r\n\r\n././no/1_nohash_0.wav  \r\n   \r\n"
        b"  yes\\2_nohash_0.wav\t\r\n")
    s = read_splits(root)
    assert s.splits["testing"] == ["no/1_nohash_0.wav", "yes/0_nohash_0.wav", "yes/2_nohash_0.wav"]
    assert len(s.splits["training"]) == 3


def test_list_naming_files_that_do_not_exist_says_how_many_and_the_first_three(tmp_path):
    clips = clips_of(["yes"])
    root = make_folder(tmp_path / "d", clips, validation=[],
                       testing=[clips[0]] + [f"yes/gone{i}.wav" for i in range(4)]
                       + ["_background_noise_/white.wav"])
    with pytest.raises(DataError) as e:
        read_splits(root)
    msg = str(e.value)
    assert msg == (f"{root / 'testing_list.txt'}: 5 lines name no clip: line 2: yes/gone0.wav "
                   "does not exist, line 3: yes/gone1.wav does not exist, line 4: yes/gone2.wav "
                   "does not exist and 2 more (--on-error skip ignores them)")
    # one such line is named with its line number, compiler style
    (root / "testing_list.txt").write_text(f"{clips[0]}\n_background_noise_/white.wav\n")
    with pytest.raises(DataError) as e:
        read_splits(root)
    assert str(e.value) == (f"{root / 'testing_list.txt'}:2: _background_noise_/white.wav is "
                            "not a .wav clip in a word folder (--on-error skip ignores them)")
    # skip: a warning, and the lines that name clips still count
    with pytest.warns(DataWarning, match="1 line|testing_list.txt:2"):
        s = read_splits(root, on_error="skip")
    assert s.splits["testing"] == [clips[0]]
    # a list whose every line names a missing file: the split is empty, and says so
    (root / "testing_list.txt").write_text("yes/gone.wav\n")
    with pytest.warns(DataWarning):
        s = read_splits(root, on_error="skip")
    with pytest.raises(DataError) as e:
        require_splits(s, ("testing",), "evaluate --split testing")
    assert "the testing split is empty: testing_list.txt names no clip that exists" in str(e.value)
    # the commands pass --on-error to the lists too
    with pytest.warns(DataWarning):
        d = open_decoded(root, cache_dir=tmp_path / "cache", on_error="skip", needs=("training",),
                         verbose=False)
    assert len(d["testing"]) == 0 and len(d["training"]) == 3


# ----------------------------------------------------------------- 4. word folder contents
def test_empty_and_non_wav_folders_are_not_words_and_any_case_of_wav_is_a_clip(tmp_path):
    root = tmp_path / "d"
    make_folder(root, ["no/a.wav"], validation=[], testing=[], noise=False)
    write_wav(root / "yes" / "a.WAV", tone(300))
    write_wav(root / "yes" / "b.Wav", tone(350))
    (root / "yes" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" * 8)
    (root / "yes" / "._a.WAV").write_bytes(b"\0\5\26\7 AppleDouble")  # macOS resource fork
    (root / "empty").mkdir()
    (root / "mp3s").mkdir()
    (root / "mp3s" / "a.mp3").write_bytes(b"ID3 not a wav")
    (root / "mp3s" / "notes.txt").write_text("recorded on a phone")
    (root / "mp3s" / ".DS_Store").write_bytes(b"\0")
    write_wav(root / "_background_noise_" / "HUM.WAV", tone(60, 2 * RATE))
    with pytest.warns(DataWarning, match=r"2 folder\(s\) without a \.wav clip are not words: "
                                         r"empty \(empty\), mp3s \(2 other file\(s\)\)"):
        s = read_splits(root)
    assert s.labels == ["no", "yes"]
    assert s.splits["training"] == ["no/a.wav", "yes/a.WAV", "yes/b.Wav"]
    with pytest.warns(DataWarning):
        d = open_decoded(root, cache_dir=tmp_path / "cache", needs=("training",), verbose=False)
    np.testing.assert_array_equal(d["training"].read([1, 2]),
                                  np.stack([clip_int16(root / "yes" / "a.WAV"),
                                            clip_int16(root / "yes" / "b.Wav")]))
    assert kdata.splits.noise_files(root) == [root / "_background_noise_" / "HUM.WAV"]
    assert len(background_noise(str(root))) == 1


def test_a_folder_whose_word_folders_hold_no_clip_is_one_line(tmp_path):
    root = tmp_path / "d"
    (root / "empty").mkdir(parents=True)
    (root / "mp3s").mkdir()
    (root / "mp3s" / "a.mp3").write_bytes(b"ID3")
    with pytest.raises(DataError) as e:
        read_splits(root)
    assert str(e.value) == (f"{root}: no word folder holds a .wav clip (empty: empty, "
                            "mp3s: 1 other file(s))")


# ----------------------------------------------------------- 5. symlinks, unusual names
def test_symlinked_clips_and_folders_and_names_with_spaces_or_accents(tmp_path):
    store = tmp_path / "store"
    write_wav(store / "one.wav", tone(440))
    write_wav(store / "bien" / "a.wav", tone(520))
    root = tmp_path / "d"
    make_folder(root, ["go now/a b.wav", "yes/real.wav"], validation=[], testing=None)
    os.symlink(store / "one.wav", root / "yes" / "link.wav")
    word = unicodedata.normalize("NFC", "très bien")
    os.symlink(store / "bien", root / word, target_is_directory=True)
    os.symlink(store / "gone.wav", root / "yes" / "broken.wav")  # dangling: not a clip
    # a list written on macOS spells the accent decomposed (NFD)
    nfd = unicodedata.normalize("NFD", f"{word}/a.wav")
    assert nfd != f"{word}/a.wav"
    (root / "testing_list.txt").write_text(f"{nfd}\nyes/link.wav\ngo now/a b.wav\n")
    s = read_splits(root)
    assert s.labels == ["go now", "très bien", "yes"]
    assert s.splits == {"training": ["yes/real.wav"], "validation": [],
                        "testing": ["go now/a b.wav", f"{word}/a.wav", "yes/link.wav"]}
    cache = tmp_path / "cache"
    d = open_decoded(root, cache_dir=cache, needs=("testing",), verbose=False)
    np.testing.assert_array_equal(d["testing"].read([0, 1, 2]), np.stack(
        [clip_int16(root / "go now" / "a b.wav"), clip_int16(store / "bien" / "a.wav"),
         clip_int16(store / "one.wav")]))
    # the key follows the link: a changed target is a changed dataset
    key = kdata.cache.dataset_key(root)
    (store / "one.wav").write_bytes(wav_bytes(tone(880, RATE // 2)))
    assert kdata.cache.dataset_key(root) != key


# ------------------------------------------------------------------- 6. in both lists
def test_a_clip_in_both_lists_is_one_line_naming_it(tmp_path):
    clips = clips_of(["yes"])
    root = make_folder(tmp_path / "d", clips, validation=[clips[1], clips[0]], testing=[clips[1]])
    with pytest.raises(DataError) as e:
        read_splits(root)
    assert str(e.value) == (f"{root}: 1 clip(s) named in both validation_list.txt and "
                            f"testing_list.txt, e.g. {clips[1]}; a clip belongs to one split: "
                            "remove it from one list")


# ----------------------------------------------------- 7. labels that are not the words
def test_a_model_without_a_folders_word_is_one_line(tmp_path, capsys):
    root = make_folder(tmp_path / "d", clips_of(["yes", "no", "up"]), validation=[],
                       testing=clips_of(["yes", "no", "up"]))
    model = save_model(tmp_path / "m.keras", ["no", "yes", "zero"])
    code, out, err = run_cli(evaluate.main, [model, "--data", str(root), "--cache-dir",
                                             str(tmp_path / "cache")], capsys)
    assert code == 2
    assert one_error_line(err) == (f"error: {root}: the data has words the model does not know: "
                                   "up (the model's 3 labels have no _unknown_ to score them as)")


def test_a_12_label_model_on_a_folder_without_background_noise(tmp_path, models, capsys):
    words = ["yes", "no", "cat"]
    root = make_folder(tmp_path / "d", clips_of(words), validation=[], testing=clips_of(words),
                       noise=False)
    out_dir = tmp_path / "ev"
    code, out, err = run_cli(evaluate.main, [models["12"], "--data", str(root), "--cache-dir",
                                             str(tmp_path / "cache"), "--output", str(out_dir)],
                             capsys)
    assert code == 0, err
    note = [ln for ln in err.splitlines() if ln.startswith("note:")]
    assert len(note) == 1
    assert "_silence_ (no _background_noise_ recording of 1 s or more)" in note[0]
    assert "8 word(s) with no clip: up, down, left and 5 more" in note[0]
    # cat is _unknown_: ceil(10 % of 6 clips) of its 3
    assert json.loads((out_dir / "metrics.json").read_text())["clips_by_kind"] == {
        "words": 6, "unknown": 1, "silence": 0}


def test_require_splits_refuses_a_split_whose_every_clip_was_unreadable(tmp_path):
    clips = clips_of(["yes", "no"])
    root = make_folder(tmp_path / "d", clips, validation=[clips[0]], testing=[])
    (root / clips[0]).write_bytes(b"not a wav at all")
    with pytest.warns(DataWarning, match="skipped 1 unreadable"):
        with pytest.raises(DataError) as e:
            open_decoded(root, cache_dir=tmp_path / "cache", on_error="skip", verbose=False)
    assert str(e.value) == (f"{root}: the validation split has no usable clip: all 1 could not "
                            "be read (--on-error skip left them out); training needs one")


# ------------------------------------------------------------------ the commands, real clips
@pytest.mark.slow
def test_commands_on_a_test_only_folder_of_real_clips(subset_root, tmp_path, models):
    """The user's case end to end: real clips, all in testing_list.txt, an empty validation
    list; evaluate scores them, train says in one line why it cannot (exit 2)."""
    import subprocess
    import sys

    from conftest import REPO

    root = tmp_path / "mytests"
    picked = [rel for rel in read_splits(subset_root).splits["testing"]
              if rel.split("/")[0] in ("yes", "no", "up", "house")][::8]
    for rel in picked:  # links, not copies: the shared data stays where it is
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(subset_root / rel, root / rel)
    (root / "testing_list.txt").write_text("\n".join(picked) + "\n")
    (root / "validation_list.txt").write_text("")
    env = {**os.environ, "KWS_TF_CACHE": str(tmp_path / "cache")}

    def run(*args):
        return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)

    os.symlink(subset_root / "_background_noise_", root / "_background_noise_")
    words = sum(rel.split("/")[0] != "house" for rel in picked)
    unknown = min(-(-words // 10), len(picked) - words)  # ceil(10 %), at most every house clip
    for model, clips in ((models["35"], f"({len(picked)} clips,"),
                         (models["12"], f": {words} words, {unknown} unknown, "
                                        f"{-(-words // 10)} silence")):
        p = run("kws_tf.evaluate", model, "--data", str(root), "--split", "testing")
        assert p.returncode == 0, p.stderr
        assert "testing: accuracy" in p.stdout and clips in p.stdout, p.stdout
    p = run("kws_tf.train", "gru1", "--data", str(root), "--output", str(tmp_path / "run"),
            "--epochs", "1", "--quiet")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1] == (
        f"error: {root}: the training split is empty: every clip is named in validation_list.txt "
        "or testing_list.txt; training needs one")


# ------------------------------------------- what the commands that train or export check
def test_train_on_a_folder_without_validation_clips_leaves_no_run_folder(tmp_path, capsys):
    from kws_tf import train

    clips = clips_of(["yes", "no"])
    root = make_folder(tmp_path / "d", clips, validation=[], testing=clips[:2])
    run = tmp_path / "run"
    code, _, err = run_cli(train.main, ["gru1", "--data", str(root), "--output", str(run),
                                        "--cache-dir", str(tmp_path / "cache")], capsys)
    assert code == 2 and "the validation split is empty: validation_list.txt is empty" in \
        one_error_line(err)
    assert not run.exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("experiment", ["reproduce", "tune"])
def test_experiments_refuse_a_test_only_folder_before_writing_anything(tmp_path, capsys,
                                                                      experiment):
    from experiments import reproduce
    from experiments.tune import cli as tune_cli

    clips = clips_of(["yes", "no"])
    root = make_folder(tmp_path / "d", clips, validation=[], testing=clips)
    out = tmp_path / "out"
    main, argv = ((reproduce.main, ["--data", str(root), "--output", str(out)])
                  if experiment == "reproduce" else
                  (tune_cli.main, ["--data", str(root), "--directory", str(out)]))
    code, _, err = run_cli(main, argv, capsys)
    assert code == 2 and "the training split is empty" in one_error_line(err)
    assert not out.exists()


def test_export_reads_only_the_splits_it_needs(tmp_path):
    from kws_tf.export import load_export_data

    clips = clips_of(["yes", "no"])
    root = make_folder(tmp_path / "d", clips, validation=clips[:2], testing=None)
    data = load_export_data(root, ["no", "yes"], 8000, "validation", cache_dir=tmp_path / "c")
    assert data.audio.shape == (2, 8000) and len(data.calibration) >= 4  # + silence, noise
    with pytest.raises(DataError) as e:
        load_export_data(root, ["no", "yes"], 8000, "testing", cache_dir=tmp_path / "c")
    assert str(e.value) == (f"{root}: the testing split is empty: there is no testing_list.txt; "
                            "export needs one")


def test_fit_on_a_folder_without_a_testing_list_reports_no_test_figures(tmp_path):
    from kws_tf.training import FitConfig, fit, load_training_data

    clips = clips_of(["yes", "no"], n=4)
    root = make_folder(tmp_path / "d", clips, validation=clips[::4], testing=None)
    data = load_training_data(root, 8000, cache_dir=tmp_path / "cache", verbose=False)
    run = fit(tiny_variant(), data, FitConfig(sample_rate=8000, epochs=1, batch_size=3, verbose=0,
                                              jit_compile=False), output=tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "validation" in metrics and "testing" not in metrics and "testing" not in run.metrics
    assert (tmp_path / "run" / "model.keras").is_file()
    assert not (tmp_path / "run" / "confusion_matrix.png").exists()
