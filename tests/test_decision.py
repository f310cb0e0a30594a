"""Decision settings that fit a model (kws_tf.detection.choose): chosen on validation-split
recordings, stored in the model's info, used by predict --stream and listen."""
import json

import keras
import numpy as np
import pytest

from conftest import tiny_variant
from kws_tf import artifacts
from kws_tf.detection import choose
from kws_tf.detection.recordings import split_recordings
from kws_tf.detection import scoring
from kws_tf.detection.scoring import evaluate_setting, score_windows
from kws_tf.streaming.decision import RecognizeCommands, decision_settings, keyword_view


class ToneScorer:
    """Names conftest.tiny_root's words by their tones (300 + 250 * index Hz), 0.92 where a
    window is loud, else silence."""

    sample_rate = 16000

    def __init__(self, labels=("_silence_", "_unknown_", "down", "go", "yes")):
        self.labels = list(labels)

    def probabilities(self, x):
        spectrum = np.abs(np.fft.rfft(x, axis=-1))
        word = np.clip(np.round((spectrum.argmax(-1) - 300) / 250).astype(int), 0, 2)
        loud = np.sqrt(np.mean(np.square(x), axis=-1)) > 0.1
        first = len(self.labels) - 3
        p = np.full((len(x), len(self.labels)), 0.02)
        p[np.arange(len(x)), np.where(loud, first + word, 0)] = 0.92
        return p


def test_settings_are_the_most_words_found_within_the_false_alarm_budget(tiny_root):
    chosen = choose.choose_decision(ToneScorer(), tiny_root)
    d, how = chosen["decision"], chosen["decision_chosen"]
    assert set(d) == {"threshold", "average", "suppression"}
    assert d["threshold"] <= 0.92  # above it the scorer finds nothing
    # 9 validation clips last minutes: reused until the recordings last MIN_HOURS, at most 3x
    assert how["passes"] == choose.MAX_PASSES and how["command_words"] == 9 * 3
    assert how["on"] == "validation-split recordings"
    assert how["hop_seconds"] == choose.HOP_SECONDS
    # what it says it gave is what those settings give on those recordings
    recs = split_recordings(tiny_root, ["down", "go", "yes"], 0, passes=3, splits=("validation",))
    r = evaluate_setting(score_windows(ToneScorer(), recs["validation"], choose.HOP_SECONDS),
                         ToneScorer().labels, d, choose.TOLERANCE)
    assert how["miss_rate"] == pytest.approx(1 - r["hit_rate"], abs=1e-4)
    assert how["false_alarms_per_hour"] == pytest.approx(r["false_alarms_per_hour"], abs=0.01)
    assert how["miss_rate"] <= 1 / 3
    assert "threshold" in choose.describe(chosen) and "10 FA/h" in choose.describe(chosen)


def test_nothing_is_chosen_without_a_command_word_in_the_labels_or_the_clips(tiny_root):
    assert choose.choose_decision(ToneScorer(["bed", "cat", "dog"]), tiny_root) is None
    assert choose.choose_decision(ToneScorer(), tiny_root, commands=["left"]) is None


def test_a_model_of_every_word_spots_the_command_words_the_others_as_unknown(tiny_root):
    """The study's task has no _silence_/_unknown_: its decision spots the command words among
    its labels, every other label's probability summed into _unknown_, and names them."""
    every = ToneScorer(["bed", "cat", "down", "go", "yes"])  # quiet windows score "bed"
    chosen = choose.choose_decision(every, tiny_root)
    d = chosen["decision"]
    assert d["words"] == ["yes", "down", "go"]  # the command words it has, in COMMANDS' order
    assert "spotting yes,down,go (the other words as _unknown_)" in choose.describe(chosen)
    # the figures are those of the 12-label view: "bed"/"cat" summed into _unknown_
    view = scoring.KeywordView(every, d["words"])
    assert view.labels == ["down", "go", "yes", "_unknown_"]
    recs = split_recordings(tiny_root, d["words"], 0, passes=3, splits=("validation",))
    r = evaluate_setting(score_windows(view, recs["validation"], choose.HOP_SECONDS),
                         view.labels, d, choose.TOLERANCE)
    assert chosen["decision_chosen"]["miss_rate"] == pytest.approx(1 - r["hit_rate"], abs=1e-4)
    assert r["commands"] == 27 and r["hits"] >= 18
    # predict --stream and listen take the words from the model, a flag overrides them
    settings, line = decision_settings({"decision": d})
    assert settings["words"] == ["yes", "down", "go"] and "words yes,down,go (the model's" in line
    assert decision_settings({"decision": d}, words="all")[0]["words"] is None
    assert decision_settings({"decision": d}, words="go")[0]["words"] == ["go"]


def test_words_view_sums_the_other_labels_into_unknown():
    labels = ["_silence_", "bed", "yes", "cat", "no"]
    view_labels, view = keyword_view(labels, ["yes", "no"])
    assert view_labels == ["_silence_", "yes", "no", "_unknown_"]
    p = np.array([0.1, 0.2, 0.3, 0.15, 0.25])
    np.testing.assert_allclose(view(p), [0.1, 0.3, 0.25, 0.35])
    with_unknown, view = keyword_view(["_unknown_", "bed", "yes"], ["yes"])
    assert with_unknown == ["_unknown_", "yes"]
    np.testing.assert_allclose(view(np.array([[0.5, 0.2, 0.3]])), [[0.7, 0.3]])
    with pytest.raises(ValueError, match="--words: left not among the model's labels"):
        keyword_view(labels, ["yes", "left"])
    # a spotter of "yes" alone reports nothing else, and "bed"+"cat" can outvote "yes"
    rc = RecognizeCommands(labels, 0.5, 0.4, 0.0, minimum_count=1, words=["yes"])
    assert rc.labels == ["_silence_", "yes", "_unknown_"]
    assert rc.process(0.0, 1.0, [0, 0.35, 0.45, 0.2, 0]) is None  # bed+cat 0.55 > yes 0.45
    assert rc.process(1.0, 2.0, [0, 0.1, 0.3, 0.0, 0.6]) is None  # "no" (0.6) is not reported
    assert rc.process(2.0, 3.0, [0, 0.0, 0.9, 0.0, 0.1]).label == "yes"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_detect_makes_the_detections_recognize_commands_makes(seed):
    """The decision sweeps use averages computed once per averaging window: the same
    detections, scores and times as RecognizeCommands window by window."""
    rng = np.random.default_rng(seed)
    labels = ["_silence_", "_unknown_", "yes", "no", "up"]
    n = 400
    hop = [0.25, 0.1, 0.096][seed]
    ends = 1.0 + hop * np.arange(n)
    starts = ends - 1.0
    # runs of one word with noise: detections, repeats, suppressions and re-arming all happen
    word = np.repeat(rng.integers(0, len(labels), n // 8 + 1), 8)[:n]
    probs = rng.dirichlet(np.ones(len(labels)), n) * 0.5
    probs[np.arange(n), word] += rng.uniform(0.2, 0.5, n)
    probs /= probs.sum(-1, keepdims=True)
    cache = {}
    for threshold in (0.3, 0.5, 0.7):
        for average, suppression, count in ((0.5, 0.75, 2), (1.0, 0.0, 1), (0.75, 1.5, 3)):
            rc = RecognizeCommands(labels, average, threshold, suppression, count)
            want = [d for s, e, p in zip(starts, ends, probs)
                    if (d := rc.process(float(s), float(e), p)) is not None]
            got = scoring.detect(labels, starts, ends, probs, threshold, average, suppression,
                                 count, cache=cache)
            assert got == want
            assert len(want) >= 3 or threshold == 0.7
    assert len(cache) == 3  # one set of averages per averaging window and count


def test_model_info_update_keeps_the_model_and_the_rest_of_its_info(tmp_path):
    from kws_tf.models import build_model

    model = build_model(tiny_variant(), 8000, num_classes=5)
    path = artifacts.save_model(model, tmp_path / "m.keras", ToneScorer().labels, variant="tiny")
    before = artifacts.read_model_info(path)
    artifacts.update_model_info(path, decision={"threshold": 0.6, "average": 0.5, "suppression": 1.0})
    info = artifacts.read_model_info(path)
    assert info == {**before, "decision": {"threshold": 0.6, "average": 0.5, "suppression": 1.0}}
    again = keras.models.load_model(path, compile=False)
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    settings, line = decision_settings(info)
    assert settings["threshold"] == 0.6 and "threshold 0.6 (the model's)" in line
    assert not list(tmp_path.glob(".m.keras*"))  # no temporary file left behind


def test_choose_for_model_stores_what_it_chose(tiny_root, tmp_path, monkeypatch):
    from kws_tf.inference import scorers
    from kws_tf.models import build_model

    path = artifacts.save_model(build_model(tiny_variant(), 8000, num_classes=5),
                                tmp_path / "m.keras", ToneScorer().labels)
    monkeypatch.setattr(scorers, "load_scorer", lambda p: ToneScorer())
    chosen = choose.choose_for_model(path, tiny_root)
    info = artifacts.read_model_info(path)
    assert info["decision"] == chosen["decision"]
    assert info["decision_chosen"] == json.loads(json.dumps(chosen["decision_chosen"]))


@pytest.mark.slow
def test_train_words_ends_by_choosing_the_models_decision_settings(tiny_root, tmp_path, capsys):
    """One epoch on the tiny set learns nothing (chance accuracy): train chooses, finds no
    setting that spots a word, warns and stores nothing (a model that finds words gets its
    settings stored: test_choose_for_model_stores_what_it_chose)."""
    from kws_tf.train import main

    out = tmp_path / "run"
    assert main(["gru4", "--sample-rate", "8000", "--data", str(tiny_root), "--words", "yes,down",
                 "--epochs", "1", "--output", str(out), "--quiet", "--no-jit-compile"]) == 0
    info = artifacts.read_model_info(out / "model.keras")
    assert "decision" not in info and "decision_chosen" not in info
    captured = capsys.readouterr()
    printed = captured.out
    assert "warning: no decision setting found a command word" in captured.err
    # --words trains with the keyword-spotting recipe where no flag says otherwise
    from kws_tf.training.words_recipe import WORDS_RECIPE

    config = json.loads((out / "config.json").read_text())
    assert config["recipe"]["learning_rate"] == WORDS_RECIPE.learning_rate != 1e-4  # gru4's
    assert config["recipe"]["epochs"] == 1  # the flag wins
    assert config["words_recipe"]["flags_given"] == ["epochs"]
    assert config["fit_config"]["label_smoothing"] == WORDS_RECIPE.label_smoothing == 0.1
    assert "--words (keyword spotting): gru4 trains with" in printed
    step = WORDS_RECIPE.epochs - WORDS_RECIPE.low_lr_epochs
    assert ("label smoothing 0.1 (the lr step scaled to 1 epoch from the recipe's every "
            f"{step} of {WORDS_RECIPE.epochs} epochs) instead of") in printed


def test_export_chooses_settings_only_for_a_spotter_without_its_own(tiny_root, monkeypatch):
    from kws_tf.export import folder
    from kws_tf.inference import scorers

    monkeypatch.setattr(scorers, "load_scorer", lambda p: ToneScorer())
    info = {"labels": ToneScorer().labels, "variant": "tiny"}
    said = []
    got = folder._with_decision("m.keras", info, str(tiny_root), said.append)
    assert set(got["decision"]) == {"threshold", "average", "suppression"}
    assert got["decision_chosen"]["by"] == "export" and "streaming files" in said[0]
    own = {**info, "decision": {"threshold": 0.7}}
    assert folder._with_decision("m.keras", own, str(tiny_root), said.append) is own
    assert folder._with_decision("m.keras", info, None, said.append) is info
    from kws_tf.streaming.decision import stored_decision

    assert stored_decision(got) == ({**got["decision"]}, "model")


@pytest.mark.slow
class EveryWordToneScorer:
    """A model of every word of tiny_root with ``go`` renamed ``bed`` (labels sorted), as
    ToneScorer hears it: quiet windows and the go tone are bed, the one word not spotted."""

    sample_rate, labels = 16000, ["bed", "down", "yes"]

    def probabilities(self, x):
        p = ToneScorer().probabilities(x)  # _silence_, _unknown_, down, go, yes
        return np.stack([p[:, 0] + p[:, 1] + p[:, 3], p[:, 2], p[:, 4]], axis=1)


def test_train_of_every_word_chooses_settings_that_spot_the_command_words(tiny_root, tmp_path,
                                                                         capsys, monkeypatch):
    """A model of every word (no --words, the study's task) ends its training the same way:
    its decision spots the command words among its labels, the others as _unknown_.  The
    decision step scores with a stand-in that hears the tones (one step of training learns
    nothing, and settings that find nothing are not stored: test_train_words_ends_...)."""
    import shutil

    from kws_tf.inference import scorers
    from kws_tf.train import main

    monkeypatch.setattr(scorers, "load_scorer", lambda path: EveryWordToneScorer())

    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    (root / "go").rename(root / "bed")  # a word that is not a command
    for name in ("validation_list.txt", "testing_list.txt"):
        (root / name).write_text((root / name).read_text().replace("go/", "bed/"))
    fast = ["gru1", "--sample-rate", "8000", "--batch-size", "8", "--epochs", "1", "--quiet",
            "--no-jit-compile", "--max-steps-per-epoch", "1", "--data", str(root)]
    assert main([*fast, "--output", str(tmp_path / "run")]) == 0
    info = artifacts.read_model_info(tmp_path / "run" / "model.keras")
    assert info["labels"] == ["bed", "down", "yes"]
    assert info["decision"]["words"] == ["yes", "down"]
    assert info["decision_chosen"]["command_words"] == 6 * 3
    assert "spotting yes,down (the other words as _unknown_)" in capsys.readouterr().out
    assert main([*fast, "--output", str(tmp_path / "plain"), "--no-decision"]) == 0
    assert "decision" not in artifacts.read_model_info(tmp_path / "plain" / "model.keras")
    assert "decision settings" not in capsys.readouterr().out


def test_fast_detect_and_recognize_commands_agree_on_a_keyword_view():
    """``words``: both deciders see the other labels summed into _unknown_ (one rule)."""
    rng = np.random.default_rng(3)
    labels = ["_silence_", "_unknown_", "yes", "no", "up", "down"]
    n = 300
    ends = 1.0 + 0.1 * np.arange(n)
    word = np.repeat(rng.integers(0, len(labels), n // 6 + 1), 6)[:n]
    probs = rng.dirichlet(np.ones(len(labels)), n) * 0.4
    probs[np.arange(n), word] += rng.uniform(0.3, 0.6, n)
    probs /= probs.sum(-1, keepdims=True)
    rc = RecognizeCommands(labels, 0.5, 0.5, 0.75, 2, words=["yes", "no"])
    want = [d for s, e, p in zip(ends - 1.0, ends, probs)
            if (d := rc.process(float(s), float(e), p)) is not None]
    got = scoring.detect(labels, ends - 1.0, ends, probs, 0.5, 0.5, 0.75, 2, words=["yes", "no"])
    assert got == want and len(want) >= 3
    assert {d.label for d in want} <= {"yes", "no"}
    # "up" and "down" win windows of their own, yet are never reported
    assert len(scoring.detect(labels, ends - 1.0, ends, probs, 0.5, 0.5, 0.75, 2)) > len(want)
