"""The house's rules, checked: every module imports and every command parses its flags (the fast
loop touches each room), no module over 400 lines, no function over 60, a short package root."""
import ast
import importlib
import os
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO))
ROOMS = ("kws_tf", "experiments", "benchmarks")


def _modules():
    for room in ROOMS:
        for path in sorted((REPO / room).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__main__":
                continue  # runs its command on import; its parser is checked below
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


MODULES = dict(_modules())


@pytest.fixture(autouse=True)
def same_environment():
    """Some scripts set process defaults on import (benchmarks/gpu.py: KERAS_BACKEND=torch for
    the machine it is meant for); the tests that start subprocesses after these must not
    inherit them."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    assert importlib.import_module(name).__name__ == name


@pytest.mark.parametrize("command", [
    "kws_tf.train", "kws_tf.evaluate", "kws_tf.predict", "kws_tf.listen", "kws_tf.export",
    "experiments.reproduce", "experiments.tune.cli", "benchmarks.run", "benchmarks.streaming",
    "benchmarks.fullsize", "benchmarks.gpu", "benchmarks.profile_blocks",
    "benchmarks.inference_latency", "benchmarks.streaming_latency", "benchmarks.data_pipeline",
    "kws_tf.web.__main__", "benchmarks.web_latency"])
def test_every_command_parses_its_flags(command, capsys):
    main = importlib.import_module(command).main
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out


def test_rooms_stay_small():
    too_long, functions = [], []
    for name, path in MODULES.items():
        source = path.read_text()
        if source.count("\n") > 400:
            too_long.append((name, source.count("\n")))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 60:
                    functions.append((name, node.name, node.end_lineno - node.lineno + 1))
    assert not too_long and not functions, (too_long, functions)
    root_files = sorted(p.name for p in (REPO / "kws_tf").glob("*.py"))
    assert len(root_files) <= 12, root_files
