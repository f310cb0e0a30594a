"""``python experiments/tune.py ...``: the same command as ``python -m experiments.tune``.

The search itself is the ``experiments/tune/`` package beside this file (a package wins over a
module of the same name on import, so ``import experiments.tune`` is always the package).
"""
import pathlib
import sys

if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from experiments.tune.cli import cli_main

    sys.exit(cli_main())
