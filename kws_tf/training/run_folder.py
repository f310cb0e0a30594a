"""A run is a folder: where it goes, a one-line check that it can be written, and the per-epoch
commit (checkpoint first, then ``state.json``) that lets a killed run resume where it stopped."""
from __future__ import annotations

import datetime
import json
import shlex
import tempfile
from pathlib import Path

from .. import artifacts
from ..errors import TrainingError


def default_output(variant_name: str, sample_rate: int, base="runs") -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(base) / f"{variant_name}-{sample_rate // 1000}k-{stamp}"


def check_output_dir(output: Path) -> None:
    """Fail early, in one line, if the run folder cannot be written."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        # A probe of its own: every worker of a cluster checks the same folder at once.
        with tempfile.NamedTemporaryFile(dir=output, prefix=".write-test-"):
            pass
    except OSError as e:
        raise TrainingError(f"cannot write to output folder {output}: {e.strerror or e}") from None


def commit_epoch(model, ckpt_dir: Path, state: dict, epoch: int, improved: bool, labels,
                  write: bool = True):
    """Checkpoint first, then state.json (the commit point), then prune old checkpoints.

    ``write=False`` (a worker that is not the chief) only keeps the state in memory.
    """
    name = f"epoch-{epoch:03d}.keras"
    state["epoch"], state["latest"] = epoch, name
    if improved:
        state["best_epoch"], state["best"] = epoch, name
        state["best_val_loss"] = state["history"][-1]["val_loss"]
    if not write:
        return
    artifacts.save_model(model, ckpt_dir / name, labels, epoch=epoch)
    artifacts.write_json(ckpt_dir / "state.json", state)
    keep = {state["latest"], state["best"]}
    for old in ckpt_dir.glob("epoch-*.keras"):
        if old.name not in keep:
            old.unlink()


def interrupted_message(output: Path) -> str:
    """What Ctrl-C left in the run folder ``output``, and what to run next: the last
    completed epoch's checkpoint, the finished model, or nothing to resume."""
    output = Path(output)
    folder = shlex.quote(str(output))
    if (output / "model.keras").exists():
        return (f"interrupted after training finished: the model is {output / 'model.keras'} "
                "(without decision settings: predict --stream and listen use kws_tf's defaults)")
    try:
        epoch = json.loads((output / "checkpoints" / "state.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return ("interrupted before the first epoch ended: no checkpoint to resume from; run "
                "the same command again to start over")
    return (f"interrupted: epoch {epoch}'s checkpoint is kept in {output / 'checkpoints'}; "
            f"continue with the same command plus --resume --output {folder}")


def clear_stale_logs(output: Path) -> None:
    """A new run in a folder without a checkpoint: TensorBoard files there are an interrupted
    attempt's, which would show beside (and tangle with) this run's curves."""
    for old in (Path(output) / "logs").glob("*/events.out.tfevents.*"):
        old.unlink()
