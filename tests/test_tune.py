"""experiments/tune/: the search space, study-first trials, leaderboard, resume, distributed.

Trials train shrunken models (conftest.shrink_trials: layers / 16) on tiny data (in memory, or a few WAV files in the
Speech Commands layout for the command-line tests), so each takes seconds.
"""
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import keras
import keras_tuner as kt
import pytest

from conftest import REPO, shrink_trials, tiny_data

sys.path.insert(0, str(REPO))
from experiments import common, tune  # noqa: E402
from kws_tf.models import build_model, count_trainable_params  # noqa: E402
from kws_tf.training import FitConfig, make_optimizer  # noqa: E402
from kws_tf.variants import VARIANTS  # noqa: E402

TINY = ["--epochs", "2", "--no-jit-compile"]  # XLA's compile costs more than these trials
LABELS35 = [f"w{i}" for i in range(35)]


def _space():
    hp = kt.HyperParameters()
    tune.declare(hp)
    return hp


def test_space_is_the_studys_axes():
    hp = _space()
    space = {p.name: p for p in hp.space}
    assert set(space) == {"conv_blocks", "gru_units", "head", "optimizer", "learning_rate",
                          "weight_decay", "batch_size", "sample_rate"}
    assert list(space["conv_blocks"].values) == [2, 3, 4]
    assert list(space["batch_size"].values) == [50, 100, 150]
    assert list(space["sample_rate"].values) == [8000, 16000]
    lr = space["learning_rate"]
    assert (lr.min_value, lr.max_value, lr.sampling) == (1e-4, 0.5, "log")
    # weight decay only exists for SGD (the fit path refuses coupled L2 with Adam)
    assert space["weight_decay"].conditions[0].values == ["sgd"]


def test_hypermodel_builds_every_point_and_study_variants_match_build_model():
    hm = tune.KwsHyperModel(tune.DataSource(None, labels=LABELS35))
    study = {(len(v.conv_channels), v.gru_units, v.head): v for v in VARIANTS.values()}
    for blocks, units, head, rate in itertools.product((2, 3, 4), (128, 256),
                                                       ("log_softmax", "logits"), (8000, 16000)):
        hp = _space()
        hp.values.update(conv_blocks=blocks, gru_units=units, head=head, sample_rate=rate)
        model = hm.build(hp)
        assert model.input_shape == (None, rate) and model.output_shape == (None, 35)
        v = study.get((blocks, units, head))
        if v is not None:  # one of the six study architectures: identical to build_model's
            ref = build_model(v, rate)
            assert count_trainable_params(model) == v.trainable_params
            assert [w.shape for w in model.weights] == [w.shape for w in ref.weights]
            assert [type(layer) for layer in model.layers] == [type(layer) for layer in ref.layers]
            assert [layer.name for layer in model.layers] == [layer.name for layer in ref.layers]
        keras.backend.clear_session()
    # every recipe point turns into an optimizer the fit path accepts (no Adam + weight decay)
    for opt, wd, bs in itertools.product(("sgd", "adam"), (0.0, 1e-4), (50, 100, 150)):
        values = dict(conv_blocks=2, gru_units=128, head="logits", optimizer=opt,
                      learning_rate=1e-3, weight_decay=wd, batch_size=bs, sample_rate=8000)
        v = tune.variant_from_values(values, epochs=3)
        recipe = FitConfig(sample_rate=8000).recipe(v)
        assert recipe["batch_size"] == bs and recipe["epochs"] == 3
        assert recipe["weight_decay"] == (wd if opt == "sgd" else 0.0)
        make_optimizer(recipe, steps_per_epoch=10)


@pytest.fixture
def tiny_trials(monkeypatch):
    shrink_trials(tune.space, monkeypatch.setattr)  # where the trials look the variant up


def test_flags_become_a_search_of_plain_values(tmp_path):
    args = tune.parse_args(["--directory", str(tmp_path), "--algorithm", "hyperband",
                            "--max-trials", "0", "--study-rates", "16000,8000", "--patience", "2"])
    search = tune.search_from_args(args)
    assert search == tune.Search(algorithm="hyperband", max_trials=None, patience=2,
                                 study_rates=(16000, 8000), directory=str(tmp_path))
    assert search.project == tmp_path / "kws"
    assert tune.search_from_args(tune.parse_args(["--study-rates", "none"])).study_rates == ()
    for bad in (["--max-trials", "0"], ["--study-rates", "22050"], ["--epochs", "0"]):
        with pytest.raises(SystemExit):
            tune.parse_args(bad)


def test_data_source_words_task_relabels_each_rate_once():
    calls = []

    def load(root, rate):
        calls.append(rate)
        return tiny_data(root, rate)

    task = tune.DataSource(None, loader=load, task=common.WordTask(("a", "b")), seed=1)
    assert task.labels == ["_silence_", "_unknown_", "a", "b"] and not calls  # no decoding
    assert task.get(8000).labels == task.labels and task.get(8000) is task.get(8000)
    assert calls == [8000]
    assert task.task_config["words"] == ["a", "b"]
    plain = tune.DataSource(None, loader=load)
    assert plain.labels == ["a", "b", "c"] and plain.task_config == {}


def test_leaderboard_of_a_finished_search_ranks_and_renders(tmp_path):
    search = tune.Search(max_trials=3, epochs=2, study_rates=(8000,), directory=str(tmp_path))
    oracle = tune.make_tuner(search, tune.DataSource(None, labels=LABELS35)).oracle
    for i, acc in enumerate((0.4, 0.7, None)):
        trial = oracle.create_trial(f"t{i}")
        if acc is not None:
            oracle.update_trial(trial.trial_id, {"val_accuracy": acc, "val_loss": 1 - acc})
        trial.status = "COMPLETED" if acc is not None else "FAILED"
        oracle.end_trial(trial)
    rows = tune.leaderboard(oracle)
    assert [(r["rank"], r["val_accuracy"]) for r in rows] == [(1, 0.7), (2, 0.4), (None, None)]
    assert [r["study_variant"] for r in rows] == ["gru2@8k", "gru1@8k", "gru3@8k"]
    md = tune.render_leaderboard(rows, search, "DATA")
    assert "(random, objective val_accuracy)" in md and "Data: `DATA`; up to 2 epochs" in md
    assert "| 1 | 1 | gru2@8k |" in md and "| FAILED |" in md


def test_study_variants_are_the_first_trials(tmp_path, tiny_trials):
    search = tune.Search(max_trials=9, study_rates=(16000, 8000), directory=str(tmp_path))
    points = dict(tune.study_points([16000, 8000]))
    for algorithm in ("random", "bayesian", "hyperband"):
        search.algorithm, search.project_name = algorithm, algorithm
        search.epochs = 9 if algorithm == "hyperband" else 2  # Hyperband: 9 fresh points first
        tuner = tune.make_tuner(search, tune.DataSource(None, labels=LABELS35))
        got = []
        for i in range(8):
            trial = tuner.oracle.create_trial(f"t{i}")
            assert trial.status == "RUNNING", (algorithm, i)
            values = {k: v for k, v in trial.hyperparameters.values.items()
                      if not k.startswith("tuner/")}
            got.append(tune.which_study_variant(values))
            trial.status = "COMPLETED"
            tuner.oracle.update_trial(trial.trial_id, {"val_accuracy": 0.5, "val_loss": 1.0})
            tuner.oracle.end_trial(trial)
        assert got == list(points)[:8], (algorithm, got)


@pytest.mark.slow
def test_random_search_writes_leaderboard_and_exports_best(tmp_path, tiny_trials):
    out = tmp_path / "search"
    argv = ["--max-trials", "2", "--directory", str(out), "--study-rates", "8000",
            "--export-best", str(tmp_path / "best"), *TINY]
    assert tune.main(argv, load_data=tiny_data) == 0
    rows = json.loads((out / "kws" / "leaderboard.json").read_text())
    assert [r["study_variant"] for r in sorted(rows, key=lambda r: r["trial_id"])] == \
        ["gru1@8k", "gru2@8k"]
    assert all(r["status"] == "COMPLETED" and r["rank"] for r in rows)
    assert rows[0]["val_accuracy"] >= rows[1]["val_accuracy"]
    assert all(r["trainable_params"] > 0 and r["seconds"] > 0 for r in rows)
    md = (out / "kws" / "leaderboard.md").read_text()
    assert "| 1 |" in md and "gru1@8k" in md and "gru2@8k" in md
    assert (out / "kws" / "search.png").stat().st_size > 5_000
    for r in rows:  # each trial is an ordinary run folder
        run = out / "kws" / f"trial_{r['trial_id']}" / "run"
        assert json.loads((run / "config.json").read_text())["hyperparameters"]["sample_rate"] == 8000
        assert (run / "model.keras").exists()
    best = json.loads((tmp_path / "best" / "config.json").read_text())
    assert best["trial_id"] == rows[0]["trial_id"] and (tmp_path / "best" / "model.keras").exists()


def test_one_oracle_per_search_folder(tmp_path, tiny_trials):
    held = tune.hold_lock(tmp_path / "kws")
    with pytest.raises(ValueError, match="already runs the search"):
        tune.main(["--directory", str(tmp_path), *TINY], load_data=tiny_data)
    held.close()


@pytest.mark.slow
def test_mirrored_strategy_wraps_the_fit(tmp_path, tiny_trials):
    import tensorflow as tf

    hm = tune.KwsHyperModel(tune.DataSource(None, loader=tiny_data), epochs=1,
                            config=FitConfig(verbose=0, jit_compile=False, strategy="mirrored"))
    seen = {}

    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["strategy"] = self.model.distribute_strategy
            seen["variable"] = self.model.trainable_variables[0].value

    hp = _space()
    hp.values.update(conv_blocks=2, gru_units=128, sample_rate=8000, batch_size=50)
    metrics = hm.fit(hp, hm.build(hp), output=tmp_path / "run", trial_id="0", callbacks=[Probe()])
    # the fit path's own strategy (kws_tf.training.distribute, shared with kws_tf.train --strategy)
    assert isinstance(seen["strategy"], tf.distribute.MirroredStrategy)
    assert 0 <= metrics["val_accuracy"] <= 1
    # the model (built inside fit) has mirrored variables
    assert isinstance(seen["variable"], tf.distribute.DistributedValues), type(seen["variable"])


# ----------------------------------------------------------------------------- subprocesses
TUNE = [sys.executable, str(REPO / "tests" / "_tiny_tune.py"), "--no-jit-compile"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")}
    return dict(env, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", **extra)


def _trial_lines(text):
    """{trial_id: [tuner ids]} from the "trial N on TUNER:" lines trials print."""
    found = {}
    for trial_id, tuner_id in re.findall(r"^trial (\d+) on (\S+):", text, flags=re.M):
        found.setdefault(trial_id, []).append(tuner_id)
    return found


def _status(project, trial_id):
    path = project / f"trial_{trial_id}" / "trial.json"
    return json.loads(path.read_text())["status"] if path.exists() else None


@pytest.mark.slow
def test_resume_after_sigkill_does_not_repeat_trials(tiny_root, tmp_path):
    out = tmp_path / "search"
    project = out / "kws"
    argv = [*TUNE, "--data", str(tiny_root), "--max-trials", "3", "--directory", str(out),
            "--study-rates", "8000", "--epochs", "3"]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(argv, env=_env(), stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        # Kill it (no cleanup possible) once trial 1 has a completed epoch.
        while not (project / "trial_1" / "run" / "checkpoints" / "state.json").exists():
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "trial 1 never started"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    completed_before = {t for t in ("0", "1", "2") if _status(project, t) == "COMPLETED"}
    assert "0" in completed_before

    second = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    rerun = _trial_lines(second.stdout)
    assert not completed_before & set(rerun), (completed_before, rerun)  # finished: not redone
    rows = json.loads((project / "leaderboard.json").read_text())
    assert sorted(r["trial_id"] for r in rows) == ["0", "1", "2"]
    assert all(r["status"] == "COMPLETED" for r in rows)
    assert len({json.dumps({k: r[k] for k in tune.HP_COLUMNS}) for r in rows}) == 3
    # the interrupted trial continued from its checkpoint: one history, epochs 1, 2, ...
    epochs = [int(line.split(",")[0]) for line in
              (project / "trial_1" / "run" / "history.csv").read_text().splitlines()[1:]]
    assert epochs == list(range(1, len(epochs) + 1))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_distributed_chief_and_two_workers_share_the_trials(tiny_root, tmp_path):
    out = tmp_path / "search"
    args = [*TUNE, "--data", str(tiny_root), "--max-trials", "3", "--directory", str(out),
            "--study-rates", "8000", "--epochs", "1"]
    port = str(_free_port())
    procs, logs = {}, {}
    for name in ("chief", "worker0", "worker1"):
        logs[name] = tmp_path / f"{name}.log"
        env = _env(KERASTUNER_TUNER_ID=name, KERASTUNER_ORACLE_IP="127.0.0.1",
                   KERASTUNER_ORACLE_PORT=port)
        procs[name] = subprocess.Popen(args, env=env, stdout=open(logs[name], "w"),
                                       stderr=subprocess.STDOUT, text=True)
        if name == "chief":
            time.sleep(2)
    try:
        for name, proc in procs.items():
            rc = proc.wait(timeout=300)
            assert rc == 0, f"{name}: " + logs[name].read_text()[-3000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    text = {name: path.read_text() for name, path in logs.items()}
    assert not _trial_lines(text["chief"])  # the chief only hands out trials
    ran = {}
    for worker in ("worker0", "worker1"):
        for trial_id, tuners in _trial_lines(text[worker]).items():
            ran.setdefault(trial_id, []).extend(tuners)
    assert sorted(ran) == ["0", "1", "2"], ran
    assert all(len(tuners) == 1 for tuners in ran.values()), ran  # none run twice
    rows = json.loads((out / "kws" / "leaderboard.json").read_text())
    assert sorted(r["trial_id"] for r in rows) == ["0", "1", "2"]
    assert all(r["status"] == "COMPLETED" for r in rows)
    assert {r["study_variant"] for r in rows} == {"gru1@8k", "gru2@8k", "gru3@8k"}
    for r in rows:  # each trial's run folder says which worker trained it
        cfg = json.loads((out / "kws" / f"trial_{r['trial_id']}" / "run" / "config.json").read_text())
        assert cfg["tuner_id"] == ran[r["trial_id"]][0]


@pytest.mark.slow
def test_words_searches_the_12_label_task(tmp_path, tiny_root):
    from kws_tf.training import load_training_data

    out = tmp_path / "search12"
    argv = ["--max-trials", "1", "--directory", str(out), "--study-rates", "8000",
            "--words", "yes,down", "--unknown-percentage", "20", *TINY]
    load = lambda root, rate: load_training_data(tiny_root, rate, verbose=False)  # noqa: E731
    assert tune.main(argv, load_data=load) == 0
    (run,) = (out / "kws").glob("trial_*/run")
    config = json.loads((run / "config.json").read_text())
    assert config["labels"] == ["_silence_", "_unknown_", "yes", "down"]
    assert (config["words"], config["unknown_percentage"]) == (["yes", "down"], 20.0)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["testing"]["clips"] == 6 + 2 + 1  # ceil(20 % of 6) unknown, 1 silence


@pytest.mark.slow
@pytest.mark.parametrize("script", ["experiments/tune.py", "experiments/reproduce.py"])
def test_the_documented_script_paths_still_run_from_any_folder(tmp_path, script):
    from conftest import REPO

    p = subprocess.run([sys.executable, str(REPO / script), "--help"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "usage: python -m experiments." in p.stdout and "--data" in p.stdout
