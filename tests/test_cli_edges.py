"""What a new user meets at the commands' edges (issue 36): --help and --version, one-line
errors and warnings, what train says when a run is interrupted or learned nothing.  In-process
(main(argv) with capsys): no subprocess, no training."""
import ast
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
            "experiments.spread:main", "experiments.stream_training:main"]


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
    # listen and predict are being moved (issue 36 items 1-3): their owner switches them.
    pending = {"kws_tf/listen.py", "kws_tf/predict.py"}
    bare = []
    for folder in ("kws_tf", "benchmarks", "experiments"):
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel not in pending and "argparse.ArgumentParser(" in path.read_text():
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
