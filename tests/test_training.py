import csv
import json

import keras
import numpy as np
import pytest

from conftest import crash_at_step, tiny_variant
from kws_tf import artifacts
from kws_tf.training import (FitConfig, SplitArrays, TrainingData, TrainingError,
                             check_output_dir, classification_metrics, fit, make_optimizer)

# Small but real: the study's block structure with fewer channels, so a fit takes seconds.
TINY = tiny_variant("gru1")
# gru2's recipe adds coupled weight decay and a StepLR schedule.
TINY_WD = tiny_variant("gru2", name="tiny_wd")


def _split(rng, n, rate=8000):
    y = rng.integers(0, 3, n).astype("int32")
    t = np.arange(rate)
    x = 0.5 * np.sin(t[None, :] * (y[:, None] + 1) * 0.05) + rng.uniform(-0.1, 0.1, (n, rate))
    return SplitArrays(x.astype("float32"), y)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return TrainingData(None, ["a", "b", "c"], 8000,
                        {"training": _split(rng, 60), "validation": _split(rng, 20),
                         "testing": _split(rng, 20)})


# XLA compilation costs more than these tiny fits; test_xla_fast_build_trains covers it.
CFG = dict(sample_rate=8000, epochs=3, batch_size=20, verbose=0, jit_compile=False)


class SetWeights(keras.callbacks.Callback):
    """From one epoch on, overwrite the classifier's bias with ``value`` at a chosen moment.

    Deterministic on any CPU, unlike a huge learning rate, whose effect (a worse model, inf or
    NaN) depends on the float rounding of the machine (oneDNN's AVX2 and AVX-512 kernels differ).
    ``when="epoch"``: at the start of the epoch, so the epoch trains on it;
    ``when="validation"``: just before the epoch's validation pass.
    """

    def __init__(self, from_epoch, value, when):
        super().__init__()
        self.from_epoch, self.value, self.when, self.epoch = from_epoch, value, when, 0

    def _set(self):
        if self.epoch >= self.from_epoch:
            bias = self.model.get_layer("classifier").bias
            bias.assign(np.broadcast_to(np.float32(self.value), bias.shape))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        if self.when == "epoch":
            self._set()

    def on_test_begin(self, logs=None):
        if self.when == "validation":
            self._set()


def test_fit_writes_a_complete_run(data, tmp_path):
    run = fit(TINY, data, FitConfig(**CFG), output=tmp_path)
    for name in ("model.keras", "config.json", "history.csv", "metrics.json",
                 "training_loss.png", "confusion_matrix.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert list((tmp_path / "logs").iterdir())
    rows = (tmp_path / "history.csv").read_text().splitlines()
    assert rows[0] == "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds,step_seconds"
    assert len(rows) == 4
    # The steps are part of the epoch: what the epoch costs beyond them is seconds - step_seconds.
    for row in csv.DictReader(rows):
        assert 0 < float(row["step_seconds"]) < float(row["seconds"])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["validation"]["clips"] == 20 and metrics["testing"]["clips"] == 20
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["overrides"] == {"batch_size": 20, "epochs": 3}
    # plain Keras loads it; our loader also returns labels and sample rate
    model = keras.models.load_model(tmp_path / "model.keras")
    _, info = artifacts.load_model(tmp_path / "model.keras")
    assert info["labels"] == ["a", "b", "c"] and info["sample_rate"] == 8000
    x = data["testing"].audio[:5]
    np.testing.assert_allclose(model.predict(x, verbose=0), run.model.predict(x, verbose=0),
                               atol=1e-6)
    # only the latest and the best checkpoints are kept
    assert len(list((tmp_path / "checkpoints").glob("epoch-*.keras"))) <= 2


def test_atomic_writes_get_normal_permissions_and_leave_nothing_on_failure(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        artifacts.write_json(tmp_path / "m.json", {"a": 1})
        # a run folder on a shared machine must be readable like any other file (mkstemp: 0600)
        assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644
        with pytest.raises(RuntimeError):
            with artifacts.atomic_path(tmp_path / "half.keras") as tmp:
                tmp.write_bytes(b"partial")
                raise RuntimeError("killed while writing")
    finally:
        os.umask(mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


@pytest.mark.slow
def test_xla_fast_build_trains_and_ships_the_plain_build(data, tmp_path):
    run = fit(TINY, data, FitConfig(**{**CFG, "epochs": 1, "jit_compile": True}), output=tmp_path)
    assert run.model.get_layer("block2_conv_bn_pool").__class__.__name__ == "ConvBatchNormPool1D"
    shipped = keras.models.load_model(tmp_path / "model.keras")
    assert all(layer.__module__.startswith("keras") for layer in shipped.layers)
    x = data["validation"].audio[:8]
    np.testing.assert_allclose(shipped.predict(x, verbose=0), run.model.predict(x, verbose=0),
                               atol=1e-5)
    # the XLA build and the plain one round differently (within 1e-5, above): a near-tie clip
    # may be counted either way
    lo, hi = _accuracy_range(shipped.predict(data["validation"].audio, verbose=0),
                             data["validation"].labels, tol=2e-5)
    assert lo - 1e-9 <= run.metrics["validation"]["accuracy"] <= hi + 1e-9


def _accuracy_range(scores, labels, tol):
    """Accuracy of argmax(scores), counting clips whose top two are within ``tol`` as right and
    as wrong: another computation of the same function (another batch size, another build)
    may round such a near-tie the other way.  Without near-ties the range is one value."""
    top2 = np.sort(scores, -1)[:, -2:]
    unsure = top2[:, 1] - top2[:, 0] <= tol
    right = scores.argmax(-1) == labels
    return float((right & ~unsure).mean()), float((right | unsure).mean())


def test_validation_accuracy_is_over_the_validation_set(data, tmp_path):
    run = fit(TINY, data, FitConfig(**{**CFG, "epochs": 1}), output=tmp_path)
    lo, hi = _accuracy_range(run.model.predict(data["validation"].audio, verbose=0),
                             data["validation"].labels, tol=1e-5)
    assert hi - lo <= 0.1  # at most 2 of the 20 clips in doubt
    for accuracy in (run.metrics["validation"]["accuracy"], run.history[0]["val_accuracy"]):
        assert lo - 1e-6 <= accuracy <= hi + 1e-6


def test_best_validation_epoch_is_restored(data, tmp_path):
    # From epoch 2 on the model is wrecked before validation (a bias of +50 on class "a": every
    # clip of another class costs ~50 nats), so epoch 1 must win and be restored.
    wreck = SetWeights(1, [50.0, -50.0, -50.0], when="validation")
    run = fit(TINY, data, FitConfig(**CFG), output=tmp_path, callbacks=[wreck])
    losses = [r["val_loss"] for r in run.history]
    assert len(losses) == 3 and min(losses[1:]) > 10 * losses[0]  # the wreck took effect
    assert run.best_epoch == 1
    assert run.metrics["validation"]["loss"] == pytest.approx(losses[0], rel=1e-4)
    assert abs(run.metrics["validation"]["loss"] - losses[-1]) > 1e-3
    state = json.loads((tmp_path / "checkpoints" / "state.json").read_text())
    assert state["best"] == "epoch-001.keras" and state["latest"] == "epoch-003.keras"


def test_nan_loss_stops_with_last_good_checkpoint(data, tmp_path):
    # A NaN weight from the start of epoch 2: the loss is NaN from its first batch on.
    poison = SetWeights(1, np.nan, when="epoch")
    with pytest.raises(TrainingError,
                       match=r"loss became nan in epoch 2 .*diverged.*epoch-001\.keras"):
        fit(TINY, data, FitConfig(**CFG), output=tmp_path, callbacks=[poison])
    state = json.loads((tmp_path / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 1 and (tmp_path / "checkpoints" / "epoch-001.keras").exists()
    assert not (tmp_path / "checkpoints" / "epoch-002.keras").exists()
    assert not (tmp_path / "model.keras").exists()


@pytest.mark.slow
def test_resume_after_interruption_matches_uninterrupted(data, tmp_path):
    full = fit(TINY_WD, data, FitConfig(**CFG), output=tmp_path / "a")

    with pytest.raises(KeyboardInterrupt):
        fit(TINY_WD, data, FitConfig(**CFG), output=tmp_path / "b",
            callbacks=[crash_at_step(5)])  # mid epoch 2
    resumed = fit(TINY_WD, data, FitConfig(**CFG), output=tmp_path / "b", resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for a, b in zip(full.history, resumed.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    for wa, wb in zip(full.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_allclose(wa, wb, atol=1e-5)


def test_refuses_to_overwrite_or_mix_runs(data, tmp_path):
    fit(TINY, data, FitConfig(**{**CFG, "epochs": 1}), output=tmp_path)
    with pytest.raises(TrainingError, match="already holds a run"):
        fit(TINY, data, FitConfig(**{**CFG, "epochs": 1}), output=tmp_path)
    with pytest.raises(TrainingError, match="different run"):
        fit(TINY, data, FitConfig(**{**CFG, "epochs": 1, "batch_size": 10}), output=tmp_path,
            resume=True)


def test_output_check_is_safe_when_every_worker_checks_the_same_folder_at_once(tmp_path):
    # The workers of a cluster all check the run folder as they start (a shared probe file
    # made one worker's unlink fail on CI); afterwards the folder holds nothing.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: [check_output_dir(tmp_path / "run") for _ in range(300)], range(8)))
    assert list((tmp_path / "run").iterdir()) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(TrainingError, match="cannot write to output folder"):
        check_output_dir(tmp_path / "file" / "run")


def test_sgd_weight_decay_is_pytorchs_coupled_l2():
    recipe = dict(optimizer="sgd", learning_rate=0.1, weight_decay=0.01, lr_step_epochs=None,
                  lr_gamma=0.1)
    opt = make_optimizer(recipe, steps_per_epoch=1)
    p0 = np.array([1.0, -2.0, 3.0], "float32")
    g = np.array([0.5, 0.25, -1.0], "float32")
    var = keras.Variable(p0)
    opt.apply_gradients([(keras.ops.convert_to_tensor(g), var)])
    # by hand: p1 = p0 - lr * (g + wd * p0)
    np.testing.assert_allclose(var.numpy(), p0 - 0.1 * (g + 0.01 * p0), rtol=1e-6)
    torch = pytest.importorskip("torch")
    tp = torch.nn.Parameter(torch.tensor(p0))
    topt = torch.optim.SGD([tp], lr=0.1, weight_decay=0.01)
    tp.grad = torch.tensor(g)
    topt.step()
    np.testing.assert_allclose(var.numpy(), tp.detach().numpy(), rtol=1e-6)


def test_step_schedule_is_steplr():
    recipe = dict(optimizer="sgd", learning_rate=0.01, weight_decay=0.0, lr_step_epochs=20,
                  lr_gamma=0.1)
    opt = make_optimizer(recipe, steps_per_epoch=7)
    lr = opt.learning_rate  # schedule evaluated at the optimizer's step count
    sched = opt._learning_rate
    assert float(sched(20 * 7 - 1)) == pytest.approx(0.01)
    assert float(sched(20 * 7)) == pytest.approx(0.001)
    assert float(sched(40 * 7)) == pytest.approx(0.0001)
    assert float(lr) == pytest.approx(0.01)


def test_classification_metrics_by_hand():
    scores = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]))
    m = classification_metrics(scores, np.array([0, 1, 1, 2]), ["a", "b", "c"])
    assert m["accuracy"] == 0.75
    assert m["confusion"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert m["per_class"]["a"] == {"precision": 0.5, "recall": 1.0, "support": 1}
    assert m["per_class"]["b"]["recall"] == 0.5
    assert m["loss"] == pytest.approx(-np.mean(np.log([0.7, 0.8, 0.3, 0.6])))


def test_augmented_epochs_are_functions_of_seed_and_epoch_alone(tiny_root, data):
    """The fit path sets no global seed per epoch (a new one retraces the training step):
    its augmented batches must not depend on it, so a resumed run sees the same epochs."""
    import tensorflow as tf

    from kws_tf.training import train_batches

    def epoch(e, global_seed):
        tf.random.set_seed(global_seed)
        ds = train_batches(data["training"], 20, seed=3, epoch=e, augment=True,
                            sample_rate=8000, root=tiny_root, max_steps=None)
        return np.concatenate([x.numpy() for x, _ in ds])

    first = epoch(1, global_seed=0)
    np.testing.assert_array_equal(first, epoch(1, global_seed=12345))
    assert not np.array_equal(first, epoch(2, global_seed=0))
    clean = np.concatenate([x.numpy() for x, _ in train_batches(
        data["training"], 20, seed=3, epoch=1, augment=False, sample_rate=8000, root=tiny_root,
        max_steps=None)])
    assert not np.array_equal(first, clean)  # really augmented


def test_the_fit_paths_datasets_run_without_tf_datas_autotuner(tiny_root, data):
    """With the autotuner, destroying an epoch's iterator waited for its thread, up to seconds
    beyond the steps (kws_tf.data.pipeline.without_autotune); every dataset the fit path and
    make_dataset hand out must have it off, augmented or not, 8 or 16 kHz."""
    from kws_tf.data import make_dataset
    from kws_tf.training.batches import eval_batches, train_batches

    made = [train_batches(data["training"], 20, seed=3, epoch=1, augment=aug, sample_rate=8000,
                          root=tiny_root, max_steps=None) for aug in (False, True)]
    made += [eval_batches(data["validation"], 20, 8000),
             make_dataset(tiny_root, "training", 8000, batch_size=4, augment=True),
             make_dataset(tiny_root, "validation", 16000, batch_size=4)]
    for ds in made:
        assert ds.options().autotune.enabled is False
        assert sum(len(x) for x, _ in ds) > 0  # and they still give batches


def test_time_shift_reaches_the_augmented_batches(tiny_root, data):
    from kws_tf.training.batches import train_batches
    from kws_tf.training.cli_args import add_fit_args, fit_config_from_args
    import argparse

    def epoch(shift):
        ds = train_batches(data["training"], 20, seed=3, epoch=1, augment=True, sample_rate=8000,
                           root=tiny_root, max_steps=None, time_shift_ms=shift)
        return np.concatenate([x.numpy() for x, _ in ds])

    np.testing.assert_array_equal(epoch(300.0), epoch(300.0))
    assert not np.array_equal(epoch(300.0), epoch(100.0))
    p = argparse.ArgumentParser()
    add_fit_args(p)
    assert fit_config_from_args(p.parse_args(["--time-shift-ms", "250"])).time_shift_ms == 250.0
    assert fit_config_from_args(p.parse_args([])).time_shift_ms == 100.0


def test_init_pytorch_starts_from_pytorchs_draw_and_is_recorded(data, tmp_path, monkeypatch):
    from kws_tf import models
    from kws_tf.training import fit_loop

    started = {}
    real = models.initialize_like_pytorch

    def spy(model, seed):
        real(model, seed)
        started.update({w.path: np.asarray(w).copy() for w in model.weights})
        return model

    monkeypatch.setattr(fit_loop, "initialize_like_pytorch", spy)
    fit(TINY, data, FitConfig(**{**CFG, "epochs": 1, "init": "pytorch", "seed": 3}),
        output=tmp_path / "p")
    want = real(models.build_model(TINY, 8000, num_classes=3), seed=3)
    for w in want.weights:  # the run started from the seed's PyTorch-style draw
        np.testing.assert_array_equal(started[w.path], np.asarray(w))
    assert json.loads((tmp_path / "p" / "config.json").read_text())["fit_config"]["init"] == "pytorch"
    with pytest.raises(TrainingError, match="init must be one of keras, pytorch"):
        fit(TINY, data, FitConfig(**{**CFG, "init": "xavier"}), output=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_smoothed_loss_is_kerass_smoothed_cross_entropy_and_survives_a_checkpoint(data, tmp_path):
    from kws_tf.training.fit_loop import SmoothedSparseCrossentropy, make_loss
    from kws_tf.training.cli_args import add_fit_args, fit_config_from_args
    import argparse

    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (16, 5)).astype("float32")
    y = rng.integers(0, 5, 16)
    onehot = np.eye(5, dtype="float32")[y]
    for s in (0.0, 0.1, 0.3):
        want = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=s)(onehot, logits)
        got = SmoothedSparseCrossentropy(s)(y, logits)
        assert float(got) == pytest.approx(float(want), rel=1e-5)
        assert float(make_loss(s)(y, logits)) == pytest.approx(float(want), rel=1e-5)
    assert float(SmoothedSparseCrossentropy(0.1)(y, logits)) != pytest.approx(
        float(make_loss(0.0)(y, logits)), rel=1e-3)
    with pytest.raises(ValueError):
        SmoothedSparseCrossentropy(1.0)
    p = argparse.ArgumentParser()
    add_fit_args(p)
    assert fit_config_from_args(p.parse_args(["--label-smoothing", "0.1"])).label_smoothing == 0.1
    assert fit_config_from_args(p.parse_args(["--partial-negatives", "0.2"])).partial_negatives == 0.2
    assert fit_config_from_args(p.parse_args([])).label_smoothing == 0.0
    # a checkpoint of a smoothed run loads with its loss (what --resume does)
    run = fit(TINY, data, FitConfig(**{**CFG, "epochs": 1}, label_smoothing=0.2), output=tmp_path / "s")
    state = json.loads((tmp_path / "s" / "checkpoints" / "state.json").read_text())
    model = keras.models.load_model(tmp_path / "s" / "checkpoints" / state["latest"])
    assert isinstance(model.loss, SmoothedSparseCrossentropy) and model.loss.label_smoothing == 0.2
    assert json.loads((tmp_path / "s" / "config.json").read_text())["fit_config"]["label_smoothing"] == 0.2
    with pytest.raises(TrainingError, match="different run"):
        fit(TINY, data, FitConfig(**{**CFG, "epochs": 2}), output=tmp_path / "s", resume=True)
    assert run.history[0]["loss"] > 0
