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
from kws_tf.detection.scoring import evaluate_setting, score_windows
from kws_tf.inference.streaming import decision_settings


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


def test_nothing_is_chosen_without_unknown_or_silence_or_without_the_words(tiny_root):
    assert choose.choose_decision(ToneScorer(["down", "go", "yes"]), tiny_root) is None
    assert choose.choose_decision(ToneScorer(), tiny_root, commands=["left"]) is None


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
    from kws_tf.train import main

    out = tmp_path / "run"
    assert main(["gru4", "--sample-rate", "8000", "--data", str(tiny_root), "--words", "yes,down",
                 "--epochs", "1", "--output", str(out), "--quiet"]) == 0
    info = artifacts.read_model_info(out / "model.keras")
    assert set(info["decision"]) == {"threshold", "average", "suppression"}
    assert info["decision_chosen"]["command_words"] == 6 * 3  # yes and down, 3 validation clips each, 3 passes
    printed = capsys.readouterr().out
    assert "decision settings chosen on" in printed
    # --words trains with the keyword-spotting recipe where no flag says otherwise
    from kws_tf.training.words_recipe import WORDS_RECIPE

    config = json.loads((out / "config.json").read_text())
    assert config["recipe"]["learning_rate"] == WORDS_RECIPE.learning_rate != 1e-4  # gru4's
    assert config["recipe"]["epochs"] == 1  # the flag wins
    assert config["words_recipe"]["flags_given"] == ["epochs"]
    assert "--words (keyword spotting): gru4 trains with" in printed


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
    from kws_tf.export.metadata import decision_settings

    assert decision_settings(got) == ({**got["decision"]}, "model")
