"""kws_tf.inference.scorers: softmax, labels next to exported models, and one Scorer over the formats."""
import numpy as np
import pytest

from conftest import tiny_variant
from kws_tf import artifacts, build_model
from kws_tf.inference.scorers import KerasScorer, load_scorer, read_labels
from kws_tf.metrics import softmax


def test_softmax_is_stable_and_normalised():
    z = np.array([[1000.0, 1000.0, 0.0], [-3.0, 0.0, 3.0]])
    p = softmax(z)
    assert p.dtype == np.float32 and np.allclose(p.sum(-1), 1.0)
    np.testing.assert_allclose(p[0], [0.5, 0.5, 0.0], atol=1e-7)  # no overflow at 1000
    np.testing.assert_allclose(p[1], np.exp([-3, 0, 3]) / np.exp([-3, 0, 3]).sum(), rtol=1e-6)


def test_read_labels_beside_or_above_the_model(tmp_path):
    (tmp_path / "labels.txt").write_text("yes\nno\n\n")
    (tmp_path / "savedmodel").mkdir()
    assert read_labels(tmp_path / "savedmodel", 2) == ["yes", "no"]  # an export folder's layout
    with pytest.raises(ValueError, match="has 2 labels, the model has 3 outputs"):
        read_labels(tmp_path, 3)
    with pytest.raises(FileNotFoundError, match="no labels.txt"):
        read_labels(tmp_path / "savedmodel" / "deeper")


def test_load_scorer_picks_the_format_and_refuses_others(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown model format"):
        load_scorer(tmp_path / "model.onnx")
    with pytest.raises(FileNotFoundError, match="no model at"):
        load_scorer(tmp_path / "missing.keras")


def test_keras_scorer_gives_the_models_softmax_in_fixed_batches(tmp_path):
    model = build_model(tiny_variant(), 8000, num_classes=3)
    path = artifacts.save_model(model, tmp_path / "model.keras", ["a", "b", "c"])
    scorer = load_scorer(path)
    assert isinstance(scorer, KerasScorer) and scorer.labels == ["a", "b", "c"]
    assert scorer.sample_rate == 8000
    x = np.random.default_rng(0).normal(0, 0.1, (5, 8000)).astype("float32")
    p = scorer.probabilities(x, batch_size=2)  # 3 batches, the last one padded
    np.testing.assert_allclose(p, softmax(model.predict(x, verbose=0)), atol=1e-6)


def test_model_keras_records_the_model_rate_and_its_input_rate_apart(tmp_path):
    """An 8 kHz model that resamples 16 kHz input itself is an 8 kHz model fed 16 kHz audio."""
    model = build_model(tiny_variant(), 8000, num_classes=2, input_rate=16000)
    path = artifacts.save_model(model, tmp_path / "model.keras", ["a", "b"])
    info = artifacts.read_model_info(path)
    assert (info["sample_rate"], info["input_rate"], info["input_samples"]) == (8000, 16000, 16000)
    scorer = load_scorer(path)
    assert scorer.sample_rate == 16000  # what it must be fed
    assert scorer.probabilities(np.zeros((3, 16000), np.float32)).shape == (3, 2)
    plain = artifacts.save_model(build_model(tiny_variant(), 8000, num_classes=2),
                                 tmp_path / "plain.keras", ["a", "b"])
    info = artifacts.read_model_info(plain)
    assert (info["sample_rate"], info["input_rate"], info["input_samples"]) == (8000, 8000, 8000)
