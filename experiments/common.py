"""What the experiment commands (``reproduce``, ``tune``) share: their parser, the --words task
as plain values, the data loaded once per sample rate, the process setup and the lock that keeps
one process per output folder.  Only the command-line layer reads parsed arguments; everything
below it takes the plain values these helpers turn them into."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Callable, Optional

from kws_tf import cli
from kws_tf.platform.locks import exclusive_lock
from kws_tf.training.cli_args import add_fit_args, add_words_args, prepare_process


def parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """An experiment's parser: the module docstring's first paragraph as the description, the
    rest as the epilog."""
    rest = doc.strip().split("\n\n", 1)
    return cli.ArgumentParser(prog=prog, description=cli.first_paragraph(doc),
                              epilog=rest[1] if len(rest) > 1 else None,
                              formatter_class=argparse.RawDescriptionHelpFormatter)


def add_shared_args(p: argparse.ArgumentParser) -> None:
    """--data/--on-error/--cache-dir and the --words task, as in the training CLI."""
    cli.add_data_args(p)
    add_words_args(p)


def add_training_args(p: argparse.ArgumentParser, **options) -> None:
    """The fit path's flags without the recipe ones (experiments set those per cell or trial)."""
    add_fit_args(p, recipe=False, **options)


@dataclasses.dataclass(frozen=True)
class WordTask:
    """The --words task: labels ``_silence_``, ``_unknown_``, then ``words``; no words = the
    study's task (every word of the dataset)."""

    words: Optional[tuple] = None
    silence_percentage: float = 10.0
    unknown_percentage: float = 10.0

    @classmethod
    def from_args(cls, args) -> "WordTask":
        words = cli_words(args)
        return cls(tuple(words) if words else None, args.silence_percentage,
                   args.unknown_percentage)

    @property
    def word_list(self) -> Optional[list]:
        """The words as recorded in cell.json and results.json (None: the study's task)."""
        return list(self.words) if self.words else None

    def labels(self) -> list:
        from kws_tf.data.tasks import task_labels

        return task_labels(self.words)

    def config(self) -> dict:
        """The task's config.json entries ({} for the study's task)."""
        from kws_tf.data.tasks import task_config

        return task_config(self.words, self.silence_percentage, self.unknown_percentage)

    def apply(self, data, seed: int):
        """``data`` relabelled for this task (unchanged for the study's task)."""
        from kws_tf.training.cli_args import word_task_data

        return word_task_data(data, self.word_list, self.silence_percentage,
                              self.unknown_percentage, seed)[0]


def cli_words(args) -> Optional[list]:
    """The words of --words (None when absent or empty)."""
    from kws_tf.data.tasks import parse_words

    return parse_words(getattr(args, "words", None))


def rate_loader(root, load_data=None, **load_options) -> Callable:
    """``load(rate) -> TrainingData``.

    ``load_data(root, rate)`` when given (tests swap in in-memory data), else the dataset at
    ``root`` decoded at that rate (``load_options``: on_error, cache_dir).
    """
    if load_data is not None:
        return lambda rate: load_data(root, rate)

    def load(rate: int):
        from kws_tf.training import load_training_data

        print(f"Loading data at {rate} Hz from {root}", flush=True)
        return load_training_data(root, rate, **load_options)

    return load


def data_root(data, load_data=None):
    """The dataset folder of --data (a swapped-in loader gets --data as it is)."""
    if load_data is not None:
        return data
    from kws_tf.data import resolve_data

    return resolve_data(data)


def require_training_data(data, load_data=None) -> None:
    """Fail in one line, before any output folder or lock exists, if --data has no training or
    validation clips (a swapped-in loader is the caller's to check)."""
    if load_data is None:
        from kws_tf.data import require_splits

        require_splits(data_root(data))


def prepare(args) -> None:
    """Before TensorFlow allocates or runs anything: the process-wide settings of the flags."""
    prepare_process(args.reuse_cpu_memory, args.mixed_precision)


def hold_lock(path: Path, busy_message: str):
    """A lock held while the returned handle lives; a second holder gets ValueError."""
    return exclusive_lock(path, busy_message)


def run_cli(main: Callable, argv=None, interrupted: str = "interrupted") -> int:
    """``main(argv)`` as a command: user errors in one line (exit 2), Ctrl-C says how to resume."""
    return cli.run(main, argv, interrupted=interrupted)
