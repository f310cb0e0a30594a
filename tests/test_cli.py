"""The train/evaluate command lines, end to end in subprocesses, on a tiny dataset on disk."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, TINY_WORDS as WORDS



def _cli(module, *args, check=True, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, **kw)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


# XLA compilation costs more than these tiny runs; test_training covers the XLA path.
# --no-decision: choosing decision settings costs each run seconds; test_decision covers it.
TRAIN = ("gru1", "--sample-rate", "8000", "--batch-size", "8", "--quiet", "--no-jit-compile",
         "--no-decision")


@pytest.mark.slow
def test_train_then_evaluate(tiny_root, tmp_path):
    out = tmp_path / "run"
    proc = _cli("kws_tf.train", *TRAIN, "--epochs", "2", "--data", tiny_root, "--output", out)
    assert "testing" in proc.stdout and "best epoch" in proc.stdout
    for name in ("model.keras", "config.json", "history.csv", "metrics.json",
                 "training_loss.png", "confusion_matrix.png"):
        assert (out / name).stat().st_size > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["testing"]["clips"] == 9 and metrics["validation"]["clips"] == 9
    config = json.loads((out / "config.json").read_text())
    assert config["sample_rate"] == 8000 and config["overrides"] == {"batch_size": 8, "epochs": 2}
    assert config["cpu_memory"]["reuse_cpu_memory"] is True  # the default, recorded
    assert config["fit_config"]["reuse_cpu_memory"] is True

    ev = tmp_path / "eval"
    proc = _cli("kws_tf.evaluate", out / "model.keras", "--data", tiny_root, "--output", ev)
    acc = float(re.search(r"testing: accuracy ([0-9.]+)", proc.stdout).group(1))
    assert acc == pytest.approx(metrics["testing"]["accuracy"], abs=1e-4)
    assert json.loads((ev / "metrics.json").read_text())["accuracy"] == pytest.approx(acc, abs=1e-4)
    assert (ev / "confusion_matrix.png").stat().st_size > 0


def _history(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_resume_after_sigkill(tiny_root, tmp_path):
    args = (*TRAIN, "--epochs", "4", "--data", tiny_root)
    _cli("kws_tf.train", *args, "--output", tmp_path / "whole")

    out = tmp_path / "killed"
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "kws_tf.train", *map(str, args), "--output",
                             str(out)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state = out / "checkpoints" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["epoch"] >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)  # in epoch 2: no chance to clean up
    proc.wait()
    done = json.loads(state.read_text())["epoch"]
    assert 1 <= done < 4 and not (out / "model.keras").exists()

    _cli("kws_tf.train", *args, "--output", out, "--resume")
    whole, resumed = _history(tmp_path / "whole" / "history.csv"), _history(out / "history.csv")
    assert [r["epoch"] for r in resumed] == ["1", "2", "3", "4"]
    for a, b in zip(whole, resumed):
        for key in ("loss", "val_loss", "val_accuracy", "lr"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4, abs=1e-6), key
    m_whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    m_resumed = json.loads((out / "metrics.json").read_text())
    assert m_whole["testing"]["accuracy"] == m_resumed["testing"]["accuracy"]
    assert m_whole["best_epoch"] == m_resumed["best_epoch"]


@pytest.mark.parametrize("args, message", [
    (("gru9", "--data", "{root}"), "unknown variant 'gru9'; valid: gru1, gru2"),
    (("gru1", "--data", "{missing}"), "{missing}"),
    (("gru1", "--data", "{root}", "--output", "{blocked}/run"), "cannot write to output folder"),
])
@pytest.mark.slow
def test_errors_are_one_line_with_exit_code_2(tiny_root, tmp_path, args, message):
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    fill = dict(root=tiny_root, missing=tmp_path / "nowhere", blocked=blocked)
    proc = _cli("kws_tf.train", *(a.format(**fill) for a in args), check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message.format(**fill) in lines[0]


@pytest.mark.slow
def test_corrupt_clip_stops_or_is_skipped(tiny_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    bad = root / "yes" / "deadbeef_nohash_0.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")  # truncated header
    out = tmp_path / "run"
    proc = _cli("kws_tf.train", *TRAIN, "--epochs", "1", "--data", root, "--output", out,
                check=False)
    assert proc.returncode == 2 and "deadbeef_nohash_0.wav" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = _cli("kws_tf.train", *TRAIN, "--epochs", "1", "--data", root, "--output", out,
                "--on-error", "skip")
    assert "deadbeef_nohash_0.wav" in proc.stderr  # reported, not silent
    assert json.loads((out / "config.json").read_text())["labels"] == list(WORDS)
    assert (out / "model.keras").exists()


@pytest.mark.slow
def test_synthetic_data_trains_with_the_synthetic_recipe(tiny_root, tmp_path, monkeypatch):
    """--data synthetic: the embedded recipe where no flag is given, printed and recorded; the
    summary says what the accuracy means and names next commands that run."""
    import shlex
    import shutil

    from kws_tf import data as kdata
    from kws_tf.training.synthetic_recipe import SYNTHETIC_RECIPE as R

    # The tiny dataset stands in for the embedded one (same cache folder): no eSpeak build.
    monkeypatch.setenv("KWS_TF_CACHE", str(tmp_path / "cache"))
    root = kdata.synthetic_root()
    shutil.copytree(tiny_root, root)
    out = tmp_path / "run"
    args = ("gru1", "--sample-rate", "8000", "--quiet", "--no-jit-compile", "--epochs", "1",
            "--max-steps-per-epoch", "1", "--lr", "0.01", "--no-decision")
    proc = _cli("kws_tf.train", *args, "--data", "synthetic", "--output", out)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("Synthetic data: ")]
    assert len(line) == 1
    assert (f"gru1 trains with Adam lr 0.01 x0.1 every 1 epoch, batch {R.batch_size}, 1 epoch, "
            f"augmented (time shift, background noise) (the lr step scaled to 1 epoch from the "
            f"recipe's every {R.epochs - R.low_lr_epochs} of {R.epochs} epochs) instead of the "
            f"study's SGD lr 0.5, "
            f"batch 100, 10 epochs, because") in line[0]
    config = json.loads((out / "config.json").read_text())
    # gru1's study recipe is SGD lr 0.5, batch 100, 10 epochs; --lr and --epochs win.
    assert config["overrides"] == {"optimizer": "adam", "learning_rate": 0.01,
                                   "batch_size": R.batch_size, "epochs": 1}
    embedded = config["synthetic_recipe"]
    assert embedded["flags_given"] == ["epochs", "learning_rate"]
    assert embedded["changed"] == {"optimizer": {"study": "sgd", "used": "adam"},
                                   "batch_size": {"study": 100, "used": R.batch_size},
                                   "augment": {"study": False, "used": True},
                                   "lr_step_epochs": {"study": None, "used": 1}}
    # The learning-rate step (last R.low_lr_epochs epochs at lr / 10) comes on the variant.
    assert config["recipe"]["lr_step_epochs"] == 1 and config["variant"] == "gru1"
    assert config["fit_config"]["augment"] is True
    assert embedded["recipe"]["learning_rate"] == R.learning_rate

    assert "held-out synthetic eSpeak NG speakers" in proc.stdout
    assert "not on Speech Commands" in proc.stdout
    nexts = proc.stdout[proc.stdout.index("\nnext "):].splitlines()[1:4]
    commands = [shlex.split(ln.split("#")[0].replace("next", "", 1)) for ln in nexts]
    model = str(out / "model.keras")
    assert [c[:4] for c in commands] == [["python", "-m", f"kws_tf.{m}", model]
                                         for m in ("evaluate", "export", "predict")]
    assert commands[0][4:] == commands[1][4:] == ["--data", "synthetic"]
    first_test_clip = (root / "testing_list.txt").read_text().split()[0]
    assert commands[2][4:] == [str(root / first_test_clip)]
    # They run (export's own tests cover it on real clips; here it would cost a TFLite build).
    assert "testing: accuracy" in _cli(*commands[0][2:]).stdout
    assert first_test_clip.split("/")[1] in _cli(*commands[2][2:]).stdout

    # The same folder as a path is real data to the CLI: the study's recipe, nothing embedded.
    proc = _cli("kws_tf.train", *args, "--data", root, "--output", tmp_path / "real")
    config = json.loads((tmp_path / "real" / "config.json").read_text())
    assert config["overrides"] == {"learning_rate": 0.01, "epochs": 1}
    assert "synthetic_recipe" not in config and "Synthetic data" not in proc.stdout
    assert config["fit_config"]["augment"] is False
    assert "held-out synthetic" not in proc.stdout and "--data synthetic" not in proc.stdout
    assert f"python -m kws_tf.evaluate {out.parent / 'real' / 'model.keras'} --data {root}" \
        in proc.stdout


@pytest.mark.parametrize("variant", ["gru1", "gru2", "gru3", "gru4", "gru5", "gru6"])
def test_synthetic_recipe_is_valid_for_every_variant(variant):
    from kws_tf.training.synthetic_recipe import SYNTHETIC_RECIPE as R
    from kws_tf.training.synthetic_recipe import apply_synthetic_recipe
    from kws_tf.training import FitConfig, make_optimizer
    from kws_tf.variants import get_variant

    lines = []
    config = FitConfig()
    v, record = apply_synthetic_recipe(config, variant, echo=lines.append)
    assert v.name == variant and v.conv_channels == get_variant(variant).conv_channels
    recipe = config.recipe(v)
    assert recipe == {**recipe, "optimizer": R.optimizer, "learning_rate": R.learning_rate,
                      "weight_decay": 0.0, "batch_size": R.batch_size, "epochs": R.epochs,
                      "lr_step_epochs": R.epochs - R.low_lr_epochs, "lr_gamma": R.lr_gamma}
    assert record["synthetic_recipe"]["recipe"]["learning_rate"] == R.learning_rate
    make_optimizer(recipe, 64)  # gru2's weight decay is 0 here: make_optimizer refuses it with Adam
    assert len(lines) == 1
    assert lines[0].startswith(f"Synthetic data: {variant} trains with Adam lr {R.learning_rate:g} x0.1 ")
    assert config.augment is R.augment
    # A flag the user gave wins (--epochs 3 --batch-size 7 --no-augment).
    config = FitConfig(epochs=20, batch_size=7, augment=False)
    v, _ = apply_synthetic_recipe(config, variant, {"epochs", "batch_size", "augment"},
                                 echo=lines.append)
    assert (config.epochs, config.batch_size, config.learning_rate, config.augment) == \
        (20, 7, R.learning_rate, False)
    assert v.lr_step_epochs == 20 - R.low_lr_epochs  # the lr still steps for the last epochs


def test_summary_names_the_next_commands_for_real_data(tmp_path):
    import shlex

    from kws_tf.reports import summary

    split = {"accuracy": 0.5, "loss": 1.0, "clips": 10}
    metrics = {"validation": split, "testing": split, "best_epoch": 1, "epochs_run": 2,
               "train_seconds": 3.0, "train_clips_per_second": 4.0, "cpu": "a CPU"}
    out = tmp_path / "my run"
    text = summary("gru4", 16000, metrics, out)  # the downloaded dataset: no --data
    model = shlex.quote(str(out / "model.keras"))
    assert f"python -m kws_tf.evaluate {model}   #" in text
    assert f"python -m kws_tf.predict {model} CLIP.wav" in text
    assert "synthetic" not in text
    text = summary("gru4", 16000, metrics, out, data="/data/speech commands")
    assert f"python -m kws_tf.export {model} --data '/data/speech commands'   #" in text
