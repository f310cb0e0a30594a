"""``python tests/_tiny_tune.py ARGS``: ``python -m experiments.tune`` with the tests' tiny trial
models, for the tests that run the tuner as a command (resume after SIGKILL, chief and workers)."""
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS.parent), str(TESTS)]

from conftest import shrink_trials  # noqa: E402
from experiments import tune  # noqa: E402

if __name__ == "__main__":
    shrink_trials(tune.space)  # the module the trials look variant_from_values up in
    sys.exit(tune.cli_main())
