"""What a new user meets at the commands' edges (issue 36): --help and --version, one-line
errors and warnings, what train says when a run is interrupted or learned nothing.  In-process
(main(argv) with capsys): no subprocess, no training."""
import importlib
import re

import pytest

from conftest import REPO

# Every command a user runs (python -m ...), and how to reach its argument parsing in-process.
COMMANDS = ["kws_tf.train:parse_args", "kws_tf.evaluate:main", "kws_tf.export.__main__:main",
            "kws_tf.data.__main__:main", "benchmarks.run:parse_args",
            "benchmarks.streaming:parse_args", "benchmarks.streaming_latency:main",
            "benchmarks.inference_latency:main", "benchmarks.data_pipeline:main",
            "benchmarks.fullsize:main", "benchmarks.learning_curve:main",
            "benchmarks.torch_recipe:main", "benchmarks.profile_blocks:main",
            "experiments.reproduce:parse_args", "experiments.tune.cli:parse_args",
            "experiments.spread:main", "experiments.stream_training:main",
            "kws_tf.listen:main", "kws_tf.predict:main", "kws_tf.web.__main__:main",
            "benchmarks.web_latency:main", "experiments.ship:main"]


def _call(spec, argv, capsys):
    module, func = spec.split(":")
    with pytest.raises(SystemExit) as e:
        getattr(importlib.import_module(module), func)(argv)
    assert e.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("spec", COMMANDS)
def test_every_command_has_version_and_plain_help(spec, capsys):
    from kws_tf import __version__

    assert _call(spec, ["--version"], capsys).strip().endswith(f"(kws_tf {__version__})")
    text = _call(spec, ["--help"], capsys)
    assert "--version" in text
    assert "``" not in text  # RST markup of the docstrings is not shown as is


def test_no_command_builds_a_parser_without_the_shared_helper():
    """cli.ArgumentParser gives --version and plain help; a bare argparse parser would not."""
    bare = []
    for folder in ("kws_tf", "benchmarks", "experiments"):
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if "argparse.ArgumentParser(" in path.read_text():
                bare.append(rel)
    assert bare == []


def _option_help(text, flag):
    """The help of ``flag`` in ``--help`` output, on one line."""
    m = re.search(rf"^  {re.escape(flag)}\b(.*?)(?=^  -|\Z)", text, re.S | re.M)
    assert m, flag
    return " ".join(m.group(1).split())


@pytest.mark.parametrize("spec, flags", [
    ("kws_tf.evaluate:main", {"--split": "default testing", "--output": "default: print only",
                              "--batch-size": "default 100"}),
    ("kws_tf.export.__main__:main", {"--format": "default all", "--split": "default validation",
                                     "--eval-clips": "default 1000",
                                     "--calibration-clips": "default 200",
                                     "--output": "default exports/"}),
    ("benchmarks.streaming:parse_args", {"--cache-dir": "default", "--commands": "default yes,no",
                                         "--hop": "default 0.25", "--seed": "default 0",
                                         "--output": "default benchmarks/results"}),
])
def test_help_says_what_each_option_does_and_its_default(spec, flags, capsys):
    text = _call(spec, ["--help"], capsys)
    for flag, default in flags.items():
        assert default in _option_help(text, flag), flag


def test_stream_training_description_is_a_whole_sentence(capsys):
    text = _call("experiments.stream_training:main", ["--help"], capsys)
    description = text.split("\n\n")[1]
    assert " ".join(description.split()).endswith("run folders.")


def test_export_writes_to_an_ignored_folder_by_default():
    from kws_tf.export import folder

    assert folder.DEFAULT_FOLDER.as_posix() == "exports"
    assert "exports/" in (REPO / ".gitignore").read_text().split()


# Stands in for the README's install (no torch extra): importing torch fails as it would.
NO_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
"""


@pytest.mark.slow
def test_benchmark_help_works_without_torch():
    import subprocess
    import sys

    code = NO_TORCH + "from benchmarks.run import main\nmain(['--help'])\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--columns" in proc.stdout


def test_a_torch_column_without_torch_says_which_extra_to_install(monkeypatch):
    from benchmarks import columns, sections, train_speed

    monkeypatch.setattr(columns, "torch_installed", lambda: False)
    monkeypatch.setattr(train_speed, "torch_installed", lambda: False)
    started = []
    monkeypatch.setattr(train_speed, "Worker", lambda *a: started.append(a))
    log = []
    rows = train_speed.bench_training([], {k: columns.COLUMNS[k] for k in ("torch", "keras-torch")},
                                      1, 1, 1, {}, log.append)
    assert rows == [] and started == []  # no worker that could only fail
    assert log == [f'  skip {k}: needs PyTorch, which is not installed: pip install -e ".[torch]"'
                   for k in ("torch", "keras-torch")]
    res = {}
    sections._torch_inference(res, None, quick=True)
    assert 'pip install -e ".[torch]"' in res["torch eager"]["error"]


def _run(main, argv, capsys):
    from kws_tf import cli

    code = cli.run(main, [str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.err.strip().splitlines(), out.out


def test_a_missing_model_is_one_wording_in_every_command(tmp_path, capsys):
    from kws_tf.evaluate import main as evaluate
    from kws_tf.export.__main__ import main as export

    for main in (evaluate, export):
        code, err, _ = _run(main, [tmp_path / "none.keras", "--data", tmp_path], capsys)
        assert code == 2 and err == [f"error: no model at {tmp_path / 'none.keras'}"]


def test_a_bad_output_folder_fails_first_in_one_line(tmp_path, capsys, monkeypatch):
    from kws_tf import artifacts
    from kws_tf.evaluate import main as evaluate
    from kws_tf.export.__main__ import main as export

    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")

    def computed(*a, **k):
        raise AssertionError("computed before the output folder was checked")

    monkeypatch.setattr(artifacts, "load_model", computed)
    monkeypatch.setattr(artifacts, "read_model_info", computed)
    model = tmp_path / "m.keras"
    model.write_bytes(b"")
    for main in (evaluate, export):
        code, err, _ = _run(main, [model, "--data", tmp_path, "--output", blocked / "sub"], capsys)
        assert code == 2 and err == [f"error: cannot write to output folder {blocked / 'sub'}: "
                                     f"{blocked} is a file"]
        assert blocked.is_file()


def test_data_that_is_a_file_is_called_a_file(tmp_path):
    from kws_tf.data import DataError, resolve_data

    wav = tmp_path / "full.wav"
    wav.write_bytes(b"RIFF")
    with pytest.raises(DataError, match=r"full\.wav is a file, not a dataset folder"):
        resolve_data(str(wav))
    with pytest.raises(DataError, match="dataset folder not found"):
        resolve_data(str(tmp_path / "missing"))


def test_skipped_clips_warn_in_one_plain_line(tmp_path, capsys):
    import warnings

    from kws_tf.data.splits import warn_skipped

    def main(argv):
        warnings.simplefilter("always")
        warn_skipped(tmp_path, "training", {"a": "yes/a.wav: truncated WAV"})
        return 0

    code, err, _ = _run(main, [], capsys)
    assert code == 0
    assert err == [f"warning: {tmp_path} training: skipped 1 unreadable clip(s): "
                   "yes/a.wav: truncated WAV"]


def test_another_epoch_count_says_the_recipes_lr_step_was_scaled(capsys, monkeypatch):
    """--epochs 1 with the synthetic recipe (step after epoch 6 of 8): the step moves, the
    printed lines and config.json say so and keep the recipe's 6; the study's row is printed
    as published."""
    from pathlib import Path
    from types import SimpleNamespace

    from kws_tf.training import FitConfig, fit_loop
    from kws_tf.training.synthetic_recipe import SYNTHETIC_RECIPE as R, apply_recipe

    lines = []
    config = FitConfig(epochs=1)
    v, record = apply_recipe(config, "gru4", {"epochs"}, echo=lines.append)
    assert v.lr_step_epochs == 1
    step = R.epochs - R.low_lr_epochs
    assert (f"x0.1 every 1 epoch, batch {R.batch_size}, 1 epoch, augmented (time shift, background "
            f"noise) (the lr step scaled to 1 epoch from the recipe's every {step} of {R.epochs} "
            "epochs) instead of the study's") in lines[0]
    r = record["synthetic_recipe"]
    assert r["recipe"]["lr_step_epochs"] == step
    assert r["lr_step_scaled"] == {"recipe": step, "recipe_epochs": R.epochs, "used": 1,
                                   "epochs": 1}
    # The recipe's own epochs: nothing scaled, nothing said.
    lines.clear()
    _, record = apply_recipe(FitConfig(), "gru4", echo=lines.append)
    assert "scaled" not in lines[0] and "lr_step_scaled" not in record["synthetic_recipe"]

    monkeypatch.setattr(fit_loop, "count_trainable_params", lambda model: 1)
    job = SimpleNamespace(variant=v, config=config, n_train=10, output=Path("run"))
    fit_loop._print_start(job, None)
    first, changes = capsys.readouterr().out.splitlines()[:2]
    assert first.endswith("ADAM lr 0.0001, batch 100, 10 epochs")  # gru4's row: no lr step
    assert changes.startswith("this run changes the recipe: ") and \
        changes.endswith("lr x0.1 every 1 epoch")


class DeafScorer:
    """A model that learned nothing: every window is silence."""

    sample_rate = 16000
    labels = ["_silence_", "_unknown_", "down", "go", "yes"]

    def probabilities(self, x):
        import numpy as np

        p = np.full((len(x), len(self.labels)), 0.01)
        p[:, 0] = 0.96
        return p


def test_settings_that_find_nothing_are_not_stored(tiny_root, tmp_path, monkeypatch):
    from conftest import tiny_variant
    from kws_tf import artifacts
    from kws_tf.detection import choose
    from kws_tf.inference import scorers
    from kws_tf.models import build_model

    path = artifacts.save_model(build_model(tiny_variant(), 8000, num_classes=5),
                                tmp_path / "m.keras", DeafScorer.labels)
    monkeypatch.setattr(scorers, "load_scorer", lambda p: DeafScorer())
    progress = []
    chosen = choose.choose_for_model(path, tiny_root, log=progress.append)
    assert chosen["decision_chosen"]["miss_rate"] == 1.0 and choose.finds_nothing(chosen)
    assert "decision" not in artifacts.read_model_info(path)  # nothing that can never fire
    assert choose.describe(chosen).startswith("warning: no decision setting found a command word")
    assert [line.split(":")[1].split()[0] for line in progress] == ["building", "scoring", "trying"]


def _fake_run(tmp_path, monkeypatch, fit):
    """kws_tf.train's main with data loading and fit() swapped out: no training."""
    import kws_tf.training as training
    from conftest import tiny_data

    monkeypatch.setattr(training, "load_training_data", lambda *a, **k: tiny_data(None, 8000))
    monkeypatch.setattr(training, "fit", fit)


def test_train_prints_the_decision_step_then_the_next_commands_last(tiny_root, tmp_path,
                                                                    monkeypatch, capsys):
    from kws_tf.detection import choose
    from kws_tf.train import main
    from kws_tf.training import Run

    out = tmp_path / "run"
    split = {"accuracy": 0.1, "loss": 3.0, "clips": 9}
    metrics = {"validation": split, "testing": split, "best_epoch": 1, "epochs_run": 1,
               "train_seconds": 1.0, "train_clips_per_second": 1.0, "cpu": "a CPU"}
    _fake_run(tmp_path, monkeypatch, lambda *a, output, **k: Run(output, None, [], [], 1, metrics))

    def deaf(model_path, root, log=None, **kw):
        log("decision settings: scoring ...")
        return {"decision": {"threshold": 0.995, "average": 0.5, "suppression": 1.0},
                "decision_chosen": {"hours": 1.5, "miss_rate": 1.0, "false_alarms_per_hour": 0.0}}

    monkeypatch.setattr(choose, "choose_for_model", deaf)
    code, err, printed = _run(main, ["gru1", "--data", tiny_root, "--output", out], capsys)
    assert code == 0
    assert [e for e in err if e.startswith("warning:")] == [
        "warning: no decision setting found a command word on 1.5 h of validation recordings "
        "(miss rate 100 %): the model has not learned the words; nothing stored, predict "
        "--stream and listen use kws_tf's defaults"]
    lines = printed.splitlines()
    first_next = next(i for i, ln in enumerate(lines) if ln.startswith("next "))
    assert lines.index("decision settings: scoring ...") < first_next
    assert all(ln.startswith("            python -m kws_tf.") for ln in lines[first_next + 1:])


def test_ctrl_c_says_whether_a_checkpoint_is_there_to_resume(tiny_root, tmp_path, monkeypatch,
                                                             capsys):
    import json

    from kws_tf.train import main

    out = tmp_path / "run"
    epochs_done = []

    def interrupted_fit(*a, output, **k):
        if epochs_done:
            (output / "checkpoints").mkdir(parents=True)
            (output / "checkpoints" / "state.json").write_text(json.dumps({"epoch": 2}))
        raise KeyboardInterrupt

    _fake_run(tmp_path, monkeypatch, interrupted_fit)
    argv = ["gru1", "--data", tiny_root, "--output", out]
    code, err, _ = _run(main, argv, capsys)
    assert code == 130 and err == ["interrupted before the first epoch ended: no checkpoint to "
                                   "resume from; run the same command again to start over"]
    epochs_done.append(2)
    code, err, _ = _run(main, argv, capsys)
    assert code == 130 and err == [
        f"interrupted: epoch 2's checkpoint is kept in {out / 'checkpoints'}; continue with the "
        f"same command plus --resume --output {out}"]


def test_training_log_off_a_terminal_is_plain_lines(tmp_path, capsys):
    """stdout to a file (capsys is no terminal): one plain line per epoch, no ANSI codes or
    carriage returns; the first step says it compiles; a new run drops an interrupted
    attempt's TensorBoard file."""
    from conftest import tiny_data, tiny_variant
    from kws_tf.training import FitConfig, fit

    stale = tmp_path / "logs" / "train" / "events.out.tfevents.1.interrupted"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")
    fit(tiny_variant(), tiny_data(None, 8000), FitConfig(sample_rate=8000, epochs=2, batch_size=20,
                                                         jit_compile=False), output=tmp_path)
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "\r" not in printed and "\b" not in printed
    lines = printed.splitlines()
    i = lines.index("Epoch 1/2")
    assert lines[i + 1] == "compiling the training step (the first step waits for it) ..."
    assert lines[i + 2].startswith("first training step done")
    assert re.match(r"2/2 - \d+s - .*accuracy", lines[i + 3])
    assert lines[i + 4] == "Epoch 2/2" and re.match(r"2/2 - \d+s", lines[i + 5])
    assert not stale.exists()
    assert list((tmp_path / "logs" / "train").glob("events.out.tfevents.*"))


def test_first_step_on_a_terminal_says_compiling_not_an_eta(monkeypatch, capsys):
    import time

    from kws_tf.training import callbacks

    monkeypatch.setattr(callbacks, "stdout_is_terminal", lambda: True)
    bar = callbacks.EpochProgbar(3)
    bar.set_params({"verbose": 1, "epochs": 1, "steps": 50})
    bar.on_train_begin()
    bar.on_epoch_begin(0)
    bar.on_train_batch_end(0, {"loss": 1.0})
    printed = capsys.readouterr().out
    assert printed.endswith("compiling the training step (the first step waits for it) ...")
    assert "ETA" not in printed and "━" not in printed  # no bar, no ETA from the compile
    time.sleep(bar.progbar.interval)  # Keras redraws at most every 0.05 s
    bar.on_train_batch_end(1, {"loss": 1.0})
    assert "2/50" in capsys.readouterr().out  # the bar from step 2 on


def test_export_lines_align_and_a_negative_drop_is_a_gain():
    from kws_tf.export.card import file_line, versus_float
    from kws_tf.export.stream import STREAM_FILES
    from kws_tf.export.tflite_convert import TFLITE_FILES

    names = ["savedmodel", *TFLITE_FILES.values(), *STREAM_FILES.values()]
    columns = {file_line(n, 1e6, "rest").index(" MB") for n in names}
    assert len(columns) == 1  # the size column is where it is on every line
    assert versus_float(-0.36) == "accuracy gain vs float 0.36 points"
    assert versus_float(1.5) == "accuracy drop vs float 1.50 points"
