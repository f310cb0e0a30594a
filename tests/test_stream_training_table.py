"""experiments.stream_training: run folders -> one row per idea, seeds side by side."""
import json
import sys
import zipfile

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO))
from experiments import stream_training  # noqa: E402


def _run(folder, seed, miss, fa, test_acc, **fit):
    folder.mkdir(parents=True)
    extra = {}
    if "mined" in fit:
        extra["hard_negatives"] = {"clips": fit.pop("mined")}
    lr = fit.pop("lr", 1e-3)
    step = {"lr_step_epochs": fit.pop("lr_step"), "lr_gamma": 0.1} if "lr_step" in fit else {}
    where = {k: fit.pop(k) for k in ("variant", "sample_rate") if k in fit}
    config = {**where, "fit_config": {"seed": seed, "time_shift_ms": 100.0, "augment": True, **fit},
              "recipe": {"learning_rate": lr, "batch_size": 100, "epochs": 15, **step}, **extra}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.json").write_text(json.dumps(
        {"validation": {"accuracy": test_acc - 0.03}, "testing": {"accuracy": test_acc}}))
    with zipfile.ZipFile(folder / "model.keras", "w") as zf:
        zf.writestr("kws_tf.json", json.dumps({"labels": [], "decision": {"threshold": 0.9},
                                              "decision_chosen": {"miss_rate": miss,
                                                                  "false_alarms_per_hour": fa,
                                                                  "hours": 1.6}}))
    return folder


def test_rows_group_seeds_and_say_how_far_the_recipes_seeds_lie(tmp_path, capsys):
    runs = [_run(tmp_path / "b0", 0, 0.60, 8.7, 0.81), _run(tmp_path / "b1", 1, 0.74, 10.0, 0.81),
            _run(tmp_path / "s0", 0, 0.69, 8.7, 0.83, label_smoothing=0.1),
            _run(tmp_path / "s1", 1, 0.63, 9.3, 0.80, label_smoothing=0.1),
            _run(tmp_path / "h0", 0, 0.76, 9.9, 0.78, mined=859),
            _run(tmp_path / "n0", 0, 0.75, 8.7, 0.80, noise_dbfs=[-70.0, -35.0]),
            _run(tmp_path / "l0", 0, 0.82, 10.0, 0.70, lr=1e-4),
            _run(tmp_path / "d0", 0, 0.46, 7.9, 0.90, label_smoothing=0.1, lr_step=12),
            _run(tmp_path / "c0", 1, 0.50, 9.7, 0.88, label_smoothing=0.1, lr_step=15),
            _run(tmp_path / "g0", 0, 0.47, 8.8, 0.89, variant="gru1", label_smoothing=0.1,
                 lr_step=12),
            _run(tmp_path / "r0", 0, 0.45, 8.8, 0.89, variant="gru4", sample_rate=16000)]
    out = tmp_path / "table"
    assert stream_training.main([str(r) for r in runs] + ["--output", str(out)]) == 0
    rows = json.loads((tmp_path / "table.json").read_text())["rows"]
    assert [r["idea"] for r in rows][0] == stream_training.BASELINE
    by_idea = {r["idea"]: r for r in rows}
    assert by_idea["--label-smoothing 0.1"]["mean_miss_rate"] == pytest.approx((0.69 + 0.63 + 0.50) / 3)
    assert by_idea[stream_training.BASELINE]["spread"] == pytest.approx(0.14)
    assert by_idea["--hard-negatives-from MODEL"]["runs"][0]["hard_negatives"] == 859
    assert "--noise-dbfs=-70,-35" in by_idea and "--lr 0.0001" in by_idea
    # a step within the epochs is its own row; one at the last epoch changes nothing
    assert by_idea["--label-smoothing 0.1 last 3 epochs at lr x0.1"]["seeds"] == [0]
    # another variant or rate: a row of its own, not a seed of gru4 8 kHz's
    assert by_idea["gru1 --label-smoothing 0.1 last 3 epochs at lr x0.1"]["seeds"] == [0]
    assert by_idea["--sample-rate 16000"]["seeds"] == [0]
    assert by_idea["--label-smoothing 0.1"]["seeds"] == [0, 1, 1]
    text = (tmp_path / "table.md").read_text()
    assert "| --label-smoothing 0.1 last 3 epochs at lr x0.1 | 46.0 % (7.9) |  | 46.0 % | 0.900 |" in text
    assert "14.0 points apart" in text and text == capsys.readouterr().out
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "config.json").write_text(json.dumps({"fit_config": {"seed": 0}}))
    (tmp_path / "bare" / "metrics.json").write_text("{}")
    with zipfile.ZipFile(tmp_path / "bare" / "model.keras", "w") as zf:
        zf.writestr("kws_tf.json", "{}")
    with pytest.raises(SystemExit, match="no decision settings"):
        stream_training.main([str(tmp_path / "bare"), "--output", str(tmp_path / "t2")])
