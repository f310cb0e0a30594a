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
TRAIN = ("gru1", "--sample-rate", "8000", "--batch-size", "8", "--quiet", "--no-jit-compile")


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
def test_errors_are_one_line_with_exit_code_2(tiny_root, tmp_path, args, message):
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    fill = dict(root=tiny_root, missing=tmp_path / "nowhere", blocked=blocked)
    proc = _cli("kws_tf.train", *(a.format(**fill) for a in args), check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message.format(**fill) in lines[0]


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
