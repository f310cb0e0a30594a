"""``python -m experiments.tune``: the search command (experiments/tune/cli.py)."""
import sys

from experiments.tune.cli import cli_main

sys.exit(cli_main())
