"""The steadiness section of the benchmark (benchmarks/steadiness.py) and the PyTorch recipe
trainer of the reproduction table (benchmarks/torch_recipe.py)."""
import csv
import json
import os

import numpy as np
import pytest

pytest.importorskip("torch")

from benchmarks import steadiness  # noqa: E402
from kws_tf.data import load_splits  # noqa: E402
from kws_tf.variants import VARIANTS  # noqa: E402


def test_mini_folder_links_real_clips_and_keeps_every_word(tiny_root, tmp_path):
    dst = steadiness.make_mini(tiny_root, tmp_path / "mini", train=10, validation=3)
    words, splits = load_splits(dst)
    assert words == load_splits(tiny_root)[0]  # the same labels, so the same model
    assert len(splits["training"]) == 10 and len(splits["validation"]) == 3
    assert not splits.get("testing")
    rel = splits["training"][0]
    assert os.stat(dst / rel).st_ino == os.stat(tiny_root / rel).st_ino  # a link, not a copy
    assert set(splits["validation"]) <= set(load_splits(tiny_root)[1]["validation"])


def test_summary_leaves_the_compiling_epoch_out_and_sets_pytorch_beside():
    n = steadiness.TRAIN_CLIPS
    runs = [{"seconds": [20.0, n / 150, n / 120, n / 150], "step_seconds": [19.0, n / 160, n / 125, n / 160]},
            {"seconds": [21.0, n / 150, n / 150, n / 100], "step_seconds": [20.0, n / 155, n / 155, n / 105]},
            {"error": "boom"}]
    row = steadiness.summarise("float32", runs, torch_rates=[90.0, 100.0, 110.0])
    assert row["processes"] == 2 and row["errors"] == ["boom"]
    cli = row["cli_clips_per_s"]
    assert sorted(row["cli_clips_per_s_epochs"]) == [100.0, 120.0, 150.0, 150.0, 150.0, 150.0]
    assert (cli["min"], cli["median"], cli["max"]) == (100.0, 150.0, 150.0)
    assert cli["min_over_median"] == pytest.approx(100 / 150, abs=1e-3)
    assert row["overhead_s"]["max"] == pytest.approx(n / 100 - n / 105, abs=1e-3)
    assert row["cli_over_torch"] == 1.5


def test_section_alternates_the_modes_and_skips_bf16_without_it(tiny_root, monkeypatch):
    calls = []

    def fake_cli(data, cache, out, flags, epochs):
        calls.append(tuple(flags))
        return {"wall_s": 1.0, "steal_s": 0.0, "seconds": [9.0] + [6.0] * (epochs - 1),
                "step_seconds": [8.0] + [5.5] * (epochs - 1)}

    class FakeWorker:
        def __init__(self, *a):
            self.asked = []

        def ask(self, cmd):
            self.asked.append(cmd)
            return {"ok": True, "clips_per_s": 50.0 if cmd["config"]["options"] else 40.0}

        def close(self):
            pass

    monkeypatch.setattr(steadiness, "cli_epochs", fake_cli)
    monkeypatch.setattr(steadiness, "Worker", FakeWorker)
    monkeypatch.setattr(steadiness, "make_mini", lambda src, dst: dst)
    rows = steadiness.bench_steadiness(2, 3, bf16=True, log=lambda s: None, src=tiny_root)
    assert calls == [(), ("--mixed-precision",)] * 2
    assert [r["mode"] for r in rows] == ["float32", "bf16"]
    assert rows[0]["cli_over_torch"] == 2.5 and rows[1]["cli_over_torch"] == 2.0
    assert len(rows[0]["cli_clips_per_s_epochs"]) == 4  # 2 processes x (3 - 1) epochs
    calls.clear()
    rows = steadiness.bench_steadiness(1, 2, bf16=False, log=lambda s: None, src=tiny_root)
    assert calls == [()] and [r["mode"] for r in rows] == ["float32"]


@pytest.mark.slow
def test_cli_epochs_reads_a_real_training_process(tiny_root, tmp_path):
    run = steadiness.cli_epochs(tiny_root, tmp_path / "cache", tmp_path / "run", [], 2)
    assert "error" not in run, run.get("error")
    assert len(run["seconds"]) == 2
    assert all(0 < s < t for s, t in zip(run["step_seconds"], run["seconds"]))


def test_torch_recipe_keeps_the_best_epoch_and_steps_the_learning_rate(tiny_root, tmp_path):
    from benchmarks.torch_recipe import train_cell

    v = VARIANTS["gru2"].replace(lr_step_epochs=1, epochs=3, batch_size=10)
    m = train_cell(v, 8000, tiny_root, tmp_path / "a", seed=0, log=lambda s: None)
    rows = list(csv.DictReader(open(tmp_path / "a" / "history.csv")))
    lrs = [float(r["lr"]) for r in rows]
    assert lrs == pytest.approx([0.01, 0.001, 0.0001])  # StepLR(1, 0.1), stepped per epoch
    val = [float(r["val_loss"]) for r in rows]
    assert m["best_epoch"] == 1 + int(np.argmin(val))
    assert m["validation"]["loss"] == pytest.approx(min(val), rel=1e-5)  # the best weights
    assert m["validation"]["clips"] == 9 and m["testing"]["clips"] == 9
    losses = json.loads((tmp_path / "a" / "batch_losses.json").read_text())
    assert len(losses) == 3 * m["steps_per_epoch"] == 3 * 3  # 24 clips in batches of 10
    assert m["trainable_params"] == VARIANTS["gru2"].trainable_params - 32 * 129  # 3 words, not 35
    again = train_cell(v, 8000, tiny_root, tmp_path / "b", seed=0, log=lambda s: None)
    assert again["validation"]["loss"] == pytest.approx(m["validation"]["loss"], rel=1e-4)
    other = train_cell(v, 8000, tiny_root, tmp_path / "c", seed=1, log=lambda s: None)
    assert other["validation"]["loss"] != pytest.approx(m["validation"]["loss"], rel=1e-4)


def test_torch_recipe_can_start_from_our_initialisation(tiny_root, tmp_path):
    """--init keras: the PyTorch trainer starts from kws_tf.build_model's weights at the seed
    (Keras' orthogonal recurrent kernel, not PyTorch's uniform one), the rest unchanged."""
    import torch

    from benchmarks.torch_recipe import _copy_keras_init, train_cell
    from benchmarks.torch_reference import TorchKWS

    v = VARIANTS["gru1"].replace(epochs=1, batch_size=12)
    a, b, own = (TorchKWS(v, 8000, 3, input_rate=16000) for _ in range(3))
    _copy_keras_init(a, v, 8000, 3, seed=0)
    _copy_keras_init(b, v, 8000, 3, seed=0)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    eye = torch.eye(v.gru_units)
    hh = a.gru.weight_hh_l0.detach()  # (3 units, units): its columns orthonormal
    assert torch.allclose(hh.T @ hh, eye, atol=1e-4)
    assert not torch.allclose(own.gru.weight_hh_l0.detach().T @ own.gru.weight_hh_l0.detach(),
                              eye, atol=0.1)
    m = train_cell(v, 8000, tiny_root, tmp_path / "k", seed=0, log=lambda s: None, init="keras")
    assert m["init"] == "keras" and m["epochs_run"] == 1
    with pytest.raises(ValueError, match="init must be"):
        train_cell(v, 8000, tiny_root, tmp_path / "x", init="xavier", log=lambda s: None)
    assert not (tmp_path / "x").exists()
