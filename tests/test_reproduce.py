"""experiments/reproduce.py on tiny in-memory data with shrunken variants (seconds per cell);
the summary, the cell records and the refusals also from hand-written cells (no training)."""
import csv
import json
import sys

import keras
import pytest

from conftest import REPO, tiny_data

sys.path.insert(0, str(REPO))
from experiments import reproduce  # noqa: E402
from kws_tf import training  # noqa: E402
from kws_tf.variants import VARIANTS  # noqa: E402


@pytest.fixture(autouse=True)
def tiny_variants(monkeypatch):
    """The study's recipes and figures, with tiny layers so a cell trains in seconds."""
    small = {k: v.replace(conv_channels=(8, 16)[: min(2, len(v.conv_channels))], gru_units=8,
                          batch_size=20)
             for k, v in VARIANTS.items()}
    monkeypatch.setattr(reproduce, "VARIANTS", small)
    return small


def _no_data(root, rate):
    raise AssertionError("finished cells must not load data")


@pytest.mark.slow
def test_cells_summary_and_skip_finished(tmp_path):
    out = tmp_path / "repro"
    args = ["--variants", "gru1,gru2", "--rates", "8000", "--epochs-scale", "0.1",
            "--output", str(out), "--quiet", "--note", "Tiny test data", "--no-jit-compile"]
    assert reproduce.main(args, load_data=tiny_data) == 0
    summary = json.loads((out / "results.json").read_text())
    cells = {(c["variant"], c["sample_rate"]): c for c in summary["cells"]}
    assert set(cells) == {("gru1", 8000), ("gru2", 8000)} and summary["missing"] == []
    g1, g2 = cells["gru1", 8000], cells["gru2", 8000]
    # 10 x 0.1 = 1 epoch; gru2: 40 x 0.1 = 4 epochs, StepLR every 20 x 0.1 = 2 epochs
    assert (g1["epochs_planned"], g2["epochs_planned"]) == (1, 4)
    assert g1["study_test_accuracy"] == VARIANTS["gru1"].study_accuracy[8000]
    assert g1["difference"] == pytest.approx(g1["test_accuracy"] - 0.90)
    assert g1["trainable_params"] > 0 and g1["study_trainable_params"] == 509_347
    lrs = [float(r["lr"]) for r in csv.DictReader(open(out / g2["run_folder"] / "history.csv"))]
    assert lrs == pytest.approx([0.01, 0.01, 0.001, 0.001])
    md = (out / "results.md").read_text()
    assert "**Tiny test data**" in md and "full** Speech Commands" in md
    assert "| gru1 | 8 kHz | 90 % |" in md and "x 0.1" in md
    assert (out / "results.png").stat().st_size > 10_000
    assert (out / "cells" / "gru1-8k" / "model.keras").exists()

    # Rerun: both cells are finished, nothing is trained or even loaded.
    assert reproduce.main(args, load_data=_no_data) == 0
    # Another scale on top of finished cells is refused, not silently mixed.
    with pytest.raises(ValueError, match="use another --output"):
        reproduce.main([*args[:4], "--epochs-scale", "0.5", *args[6:]], load_data=_no_data)
    with pytest.raises(ValueError, match="trained from --init keras, not --init pytorch"):
        reproduce.main([*args, "--init", "pytorch"], load_data=_no_data)
    assert "Keras' initial weights" in md


@pytest.mark.slow
def test_killed_cell_continues_from_last_epoch(tmp_path, monkeypatch):
    out = tmp_path / "repro"
    args = ["--variants", "gru2", "--rates", "8000", "--epochs-scale", "0.1",
            "--output", str(out), "--quiet", "--no-jit-compile"]

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    real_fit = training.fit
    monkeypatch.setattr(training, "fit", lambda *a, **k: real_fit(*a, callbacks=[Kill()], **k))
    with pytest.raises(KeyboardInterrupt):
        reproduce.main(args, load_data=tiny_data)
    assert not (out / "results.json").exists() or not json.loads(
        (out / "results.json").read_text())["cells"]
    monkeypatch.setattr(training, "fit", real_fit)
    assert reproduce.main(args, load_data=tiny_data) == 0
    cell = json.loads((out / "results.json").read_text())["cells"][0]
    assert cell["resumed"] and cell["epochs_run"] == 4
    rows = list(csv.DictReader(open(out / cell["run_folder"] / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]


def _finished_cell(out, variant, rate, epochs, test_accuracy, words=None):
    """A cell folder as a finished run leaves it (metrics.json and cell.json), by hand."""
    folder = out / "cells" / reproduce.cell_name(variant, rate)
    folder.mkdir(parents=True)
    metrics = {"validation": {"accuracy": 0.5, "loss": 1.0}, "trainable_params": 1234,
               "testing": {"accuracy": test_accuracy, "loss": 1.1}, "epochs_run": epochs,
               "best_epoch": epochs, "train_seconds": 61.0, "train_clips_per_second": 40.0}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    record = {"variant": variant, "sample_rate": rate, "epochs_planned": epochs,
              "epochs_scale": 0.1, "seed": 0, "words": words, "wall_seconds": 3700.0,
              "resumed": False, "clips": {"training": 40, "validation": 12, "testing": 12},
              "data": "DATA"}
    (folder / reproduce.CELL_RECORD).write_text(json.dumps(record))
    return folder


def test_summary_of_finished_cells_and_what_is_left(tmp_path, capsys):
    assert reproduce.cell_recipe(VARIANTS["gru2"], 0.1) == (VARIANTS["gru2"].replace(
        lr_step_epochs=2), 4)
    assert reproduce.scaled_epochs(10, 0.01) == 1
    out = tmp_path / "repro"
    _finished_cell(out, "gru1", 8000, 1, 0.95)
    requested = [("gru1", 8000), ("gru2", 8000)]
    todo = reproduce.pending_cells(out, requested, 0.1, 0, None)
    assert todo == {8000: ["gru2"]} and "gru1-8k: finished earlier" in capsys.readouterr().out
    with pytest.raises(ValueError, match="use another --output"):  # another seed
        reproduce.pending_cells(out, requested, 0.1, 1, None)
    with pytest.raises(ValueError, match="trained on words"):  # another task
        reproduce.pending_cells(out, requested, 0.1, 0, ["yes", "no"])
    summary = reproduce.write_summary(out, requested, note="Hand-made cells", data="DATA",
                                      epochs_scale=0.1, command="python -m experiments.reproduce")
    (row,) = summary["cells"]
    assert summary["missing"] == ["gru2-8k"] and summary["data"] == "DATA"
    assert row["difference"] == pytest.approx(0.95 - VARIANTS["gru1"].study_accuracy[8000])
    md = (out / "results.md").read_text()
    assert "**Hand-made cells**" in md and "Not finished yet: gru2-8k." in md
    assert "| gru1 | 8 kHz | 90 % | 95.0 % |" in md and "1h01m" in md
    assert (out / "results.png").stat().st_size > 5_000


def _torch_cell(out, cell, test_accuracy, seed=0, batch_losses=None):
    folder = out / "torch" / cell
    folder.mkdir(parents=True)
    metrics = {"framework": "pytorch", "seed": seed, "best_epoch": 1, "epochs_run": 1,
               "train_seconds": 9.0, "validation": {"accuracy": 0.4, "loss": 1.2},
               "testing": {"accuracy": test_accuracy, "loss": 1.3}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if batch_losses:
        (folder / "batch_losses.json").write_text(json.dumps(batch_losses))


def test_pytorch_column_and_training_loss_figures(tmp_path):
    out = tmp_path / "repro"
    g1 = _finished_cell(out, "gru1", 8000, 2, 0.62)
    (g1 / "checkpoints").mkdir()  # the batch losses as the fit path keeps them
    (g1 / "checkpoints" / "state.json").write_text(json.dumps({"batch_losses": [3.5, 3.0, 2.5, 2.0]}))
    _finished_cell(out, "gru1", 16000, 2, 0.55)  # no batch losses: in the table, not the figure
    _finished_cell(out, "gru4", 8000, 2, 0.58)
    _torch_cell(out, "gru1-8k", 0.60, batch_losses=[3.6, 3.1, 2.4, 2.2])
    _torch_cell(out, "gru4-8k", 0.50, seed=1)  # another seed: not this table's
    requested = [("gru1", 8000), ("gru1", 16000), ("gru4", 8000)]
    summary = reproduce.write_summary(out, requested, epochs_scale=1.0)
    rows = {(r["variant"], r["sample_rate"]): r for r in summary["cells"]}
    assert rows["gru1", 8000]["ours_minus_torch"] == pytest.approx(0.02)
    assert rows["gru1", 8000]["torch_test_accuracy"] == 0.60
    assert rows["gru1", 16000]["torch_test_accuracy"] is None
    assert rows["gru4", 8000]["torch_test_accuracy"] is None
    md = (out / "results.md").read_text()
    assert "| gru1 | 8 kHz | 90 % | 62.0 % | -28.0 pp | 60.0 % | +2.0 pp |" in md
    assert "| gru4 | 8 kHz | 89 % | 58.0 % | -31.0 pp | – | – |" in md
    assert summary["loss_figures"] == ["training_loss-gru1.png"]  # gru4 has no batch losses
    assert "(training_loss-gru1.png)" in md and "training_loss-gru4" not in md
    assert (out / "training_loss-gru1.png").stat().st_size > 10_000
    # the losses are kept beside the cell's small files, which is what a table commits
    assert json.loads((g1 / "batch_losses.json").read_text()) == [3.5, 3.0, 2.5, 2.0]


def test_torch_reference_trains_the_missing_pytorch_cells(tmp_path, monkeypatch):
    import benchmarks.torch_recipe as torch_recipe

    out = tmp_path / "repro"
    for v in ("gru1", "gru2"):
        _finished_cell(out, v, 8000, reproduce.cell_recipe(VARIANTS[v], 0.1)[1], 0.5)
    _torch_cell(out, "gru1-8k", 0.45)
    trained = []

    def fake_train_cell(variant, rate, data_root, output, seed=0, epochs=None, cache_dir=None):
        trained.append((variant.name, variant.lr_step_epochs, rate, epochs, seed, str(data_root)))
        _torch_cell(out, output.name, 0.40)

    monkeypatch.setattr(torch_recipe, "train_cell", fake_train_cell)
    args = ["--variants", "gru1,gru2", "--rates", "8000", "--epochs-scale", "0.1",
            "--output", str(out), "--quiet", "--torch-reference", "--data", "DATA"]
    assert reproduce.main(args, load_data=_no_data) == 0
    # gru1's PyTorch cell was finished; gru2's gets the table's scaled recipe (4 epochs, StepLR 2)
    assert trained == [("gru2", 2, 8000, 4, 0, "DATA")]
    rows = json.loads((out / "results.json").read_text())["cells"]
    assert [r["torch_test_accuracy"] for r in rows] == [0.45, 0.40]


def test_one_process_per_output_folder(tmp_path):
    held = reproduce.hold_lock(tmp_path)
    with pytest.raises(ValueError, match="already writing"):
        reproduce.main(["--variants", "gru1", "--output", str(tmp_path)], load_data=_no_data)
    held.close()
    assert reproduce.hold_lock(tmp_path)


@pytest.mark.parametrize("bad", [["--variants", "gru9"], ["--rates", "22050"],
                                 ["--epochs-scale", "0"]])
def test_bad_arguments_exit_2(bad, capsys):
    with pytest.raises(SystemExit) as e:
        reproduce.parse_args(bad)
    assert e.value.code == 2


@pytest.mark.slow
def test_words_gives_the_12_label_table(tmp_path, tiny_root):
    from kws_tf.training import load_training_data

    out = tmp_path / "repro12"
    args = ["--variants", "gru1", "--rates", "8000", "--epochs-scale", "0.1",
            "--output", str(out), "--quiet", "--no-jit-compile", "--words", "yes,down"]
    load = lambda root, rate: load_training_data(tiny_root, rate, verbose=False)  # noqa: E731
    assert reproduce.main(args, load_data=load) == 0
    summary = json.loads((out / "results.json").read_text())
    cell = summary["cells"][0]
    assert summary["words"] == cell["words"] == ["yes", "down"]
    assert cell["study_test_accuracy"] is None and cell["difference"] is None
    assert cell["clips"]["testing"] == 6 + 1 + 1  # words + unknown + silence
    config = json.loads((out / cell["run_folder"] / "config.json").read_text())
    assert config["labels"] == ["_silence_", "_unknown_", "yes", "down"]
    assert (config["words"], config["silence_percentage"]) == (["yes", "down"], 10.0)
    assert "12-label task" in (out / "results.md").read_text()
    # the study's task on top of these cells is refused, not mixed
    with pytest.raises(ValueError, match="use another --output"):
        reproduce.main(args[:-2], load_data=_no_data)


def test_spread_reads_two_seeds_and_pytorch_from_our_init(tmp_path):
    from experiments import spread

    def cell(table, name, seed, ours, torch=None):
        c = tmp_path / table / "cells" / name
        c.mkdir(parents=True)
        (c / "cell.json").write_text(json.dumps({"seed": seed}))
        (c / "metrics.json").write_text(json.dumps({"testing": {"accuracy": ours}}))
        if torch is not None:
            t = tmp_path / table / "torch" / name
            t.mkdir(parents=True)
            (t / "metrics.json").write_text(json.dumps({"seed": seed, "testing": {"accuracy": torch}}))

    cell("s0", "gru5-8k", 0, 0.24, 0.16)
    cell("s1", "gru5-8k", 1, 0.18, 0.20)
    cell("s0", "gru4-8k", 0, 0.53, 0.53)  # one seed only: not a row
    init = tmp_path / "init" / "gru5-8k"
    init.mkdir(parents=True)
    (init / "metrics.json").write_text(json.dumps({"seed": 0, "testing": {"accuracy": 0.22}}))
    cell("pt", "gru5-8k", 0, 0.17)
    out = tmp_path / "spread.md"
    assert spread.main([str(tmp_path / "s0"), str(tmp_path / "s1"), "--keras-init",
                        str(tmp_path / "init"), "--pytorch-init", str(tmp_path / "pt"),
                        "--output", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [r["cell"] for r in rows] == ["gru5-8k"]
    r = rows[0]
    assert r["seeds"] == [0, 1] and r["ours_spread"] == pytest.approx(0.06)
    assert r["torch_spread"] == pytest.approx(0.04)
    assert r["ours_minus_torch"] == pytest.approx([0.08, -0.02])
    assert r["mean_ours_minus_torch"] == pytest.approx(0.03)
    assert r["torch_from_our_init"] == 0.22 and r["ours_from_pytorch_init"] == 0.17
    assert "| gru5-8k | 0, 1 | 24.0 % / 18.0 % | 16.0 % / 20.0 % | +6.0 | +4.0 | +8.0 / -2.0 " \
           "| +3.0 | 22.0 % | 17.0 % |" in out.read_text()
    with pytest.raises(SystemExit, match="not a reproduce output folder"):
        spread.main([str(tmp_path / "nothing"), "--output", str(out)])
