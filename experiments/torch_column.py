"""The reproduction table's PyTorch column: the original architecture trained with the same
recipe on the same splits (``benchmarks/torch_recipe.py``), one folder per cell under
``OUTPUT/torch/<variant>-<k>k/``, finished when it holds ``metrics.json``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional


def torch_folder(output: Path, cell: str) -> Path:
    return Path(output) / "torch" / cell


def torch_result(output: Path, cell: str, seed: int = 0) -> Optional[dict]:
    """The finished PyTorch cell's metrics (None if absent, unfinished or of another seed)."""
    path = torch_folder(output, cell) / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    return metrics if metrics.get("seed", 0) == seed else None


def torch_columns(output: Path, cell: str, ours_test, seed: int = 0) -> dict:
    """The row entries of one cell: PyTorch's accuracies and ours minus PyTorch."""
    m = torch_result(output, cell, seed)
    if not m:
        return {"torch_test_accuracy": None, "torch_validation_accuracy": None,
                "ours_minus_torch": None}
    test = m.get("testing", {}).get("accuracy")
    return {"torch_test_accuracy": test, "torch_validation_accuracy": m["validation"]["accuracy"],
            "torch_best_epoch": m["best_epoch"], "torch_epochs_run": m["epochs_run"],
            "torch_train_seconds": m["train_seconds"],
            "ours_minus_torch": None if test is None or ours_test is None else ours_test - test}


def train_torch_cells(output: Path, cells, data_root, seed: int, cache_dir=None,
                      epochs_of=None) -> list:
    """Train every PyTorch cell of ``cells`` ([(variant, rate, name)]) not finished yet.

    ``epochs_of(variant) -> int``: each cell's epochs (the table's --epochs-scale).
    """
    try:
        from benchmarks.torch_recipe import train_cell
    except ImportError as e:  # torch is an extra
        raise SystemExit(f"--torch-reference needs PyTorch (pip install -e '.[torch]'): {e}")
    done = []
    for variant, rate, name in cells:
        if torch_result(output, name, seed):
            print(f"{name} (PyTorch): finished earlier, skipped")
            continue
        print(f"\n=== {name} (PyTorch) " + "=" * 40, flush=True)
        train_cell(variant, rate, data_root, torch_folder(output, name), seed=seed,
                   epochs=epochs_of(variant) if epochs_of else None, cache_dir=cache_dir)
        done.append(name)
    return done
