"""How far apart two seeds put a reproduction cell, ours and PyTorch's, and where PyTorch lands
when it starts from our initial weights: what tells a cell where ours and the original code
differ by more than a few points apart from chance (the seed) and from the initialisation.

    python -m experiments.spread experiments/results/subset experiments/results/subset-seed1 \\
        --keras-init experiments/results/subset-torch-from-our-init \\
        --pytorch-init experiments/results/subset-pytorch-init \\
        --output experiments/results/subset/spread.md

Each table folder is a ``reproduce`` output (``cells/<cell>/`` ours, ``torch/<cell>/`` the
PyTorch original, ``--torch-reference``), one seed each; ``--keras-init`` holds PyTorch cells
trained with ``benchmarks.torch_recipe --init keras`` (PyTorch from our initial weights),
``--pytorch-init`` a reproduce output trained with ``--init pytorch`` (ours from PyTorch's).
Writes a markdown table and a JSON file beside it, for the cells that more than one table (or
either init folder) has.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from kws_tf import cli

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _test_accuracy(path: Path):
    if not path.is_file():
        return None, None
    m = json.loads(path.read_text())
    return m.get("testing", {}).get("accuracy"), m.get("seed")


def read_table(folder: Path) -> dict:
    """``{cell: {"seed", "ours", "torch"}}`` of one reproduce output folder."""
    out = {}
    for cell in sorted((Path(folder) / "cells").glob("*")):
        record = cell / "cell.json"
        if not record.is_file() or not (cell / "metrics.json").is_file():
            continue
        seed = json.loads(record.read_text()).get("seed", 0)
        ours, _ = _test_accuracy(cell / "metrics.json")
        torch, torch_seed = _test_accuracy(Path(folder) / "torch" / cell.name / "metrics.json")
        out[cell.name] = {"seed": seed, "ours": ours,
                          "torch": torch if torch_seed in (None, seed) else None}
    return out


def spread(tables, keras_init=None, pytorch_init=None) -> list:
    """One row per cell that two seeds (or a run from the other framework's initialisation)
    measured."""
    tables = [read_table(t) for t in tables]
    ours_init = read_table(pytorch_init) if pytorch_init else {}
    init = {}
    for cell in sorted(Path(keras_init).glob("*")) if keras_init else []:
        acc, seed = _test_accuracy(cell / "metrics.json")
        if acc is not None:
            init[cell.name] = {"seed": seed, "torch_from_our_init": acc}
    rows = []
    for cell in sorted({c for t in tables for c in t} | set(init) | set(ours_init)):
        runs = sorted((t[cell] for t in tables if cell in t), key=lambda r: r["seed"])
        if len(runs) < 2 and cell not in init and cell not in ours_init:
            continue
        ours = [r["ours"] for r in runs if r["ours"] is not None]
        torch = [r["torch"] for r in runs if r["torch"] is not None]
        diffs = [r["ours"] - r["torch"] for r in runs
                 if r["ours"] is not None and r["torch"] is not None]
        rows.append({
            "cell": cell, "seeds": [r["seed"] for r in runs],
            "ours": [r["ours"] for r in runs], "torch": [r["torch"] for r in runs],
            "ours_spread": max(ours) - min(ours) if len(ours) > 1 else None,
            "torch_spread": max(torch) - min(torch) if len(torch) > 1 else None,
            "ours_minus_torch": diffs,
            "mean_ours_minus_torch": sum(diffs) / len(diffs) if diffs else None,
            **init.get(cell, {"torch_from_our_init": None}),
            "ours_from_pytorch_init": ours_init.get(cell, {}).get("ours"),
        })
    return rows


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _pp(x) -> str:
    return "–" if x is None else f"{100 * x:+.1f}"


def render(rows) -> str:
    lines = [
        "# Seed-to-seed spread, and PyTorch from our initialisation",
        "",
        "Test accuracy of the same cell (variant, rate, the study's full recipe, the subset's "
        "splits) at each seed; *spread* = the largest minus the smallest seed, in points; "
        "*PyTorch from our init* = the PyTorch trainer (`benchmarks/torch_recipe.py --init "
        "keras`) started from the weights `kws_tf.build_model` draws at seed 0, everything "
        "else PyTorch's; *ours from PyTorch's init* = ours trained with `--init pytorch` "
        "(seed 0). Written by `python -m experiments.spread` (its docstring has the command).",
        "",
        "| cell | seeds | ours | PyTorch | ours spread | PyTorch spread | ours - PyTorch "
        "(per seed) | mean | PyTorch from our init | ours from PyTorch's init |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['cell']} | {', '.join(map(str, r['seeds']))} "
            f"| {' / '.join(map(_pct, r['ours']))} | {' / '.join(map(_pct, r['torch']))} "
            f"| {_pp(r['ours_spread'])} | {_pp(r['torch_spread'])} "
            f"| {' / '.join(map(_pp, r['ours_minus_torch'])) or '–'} "
            f"| {_pp(r['mean_ours_minus_torch'])} | {_pct(r['torch_from_our_init'])} "
            f"| {_pct(r['ours_from_pytorch_init'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from kws_tf import artifacts

    p = cli.ArgumentParser(prog="python -m experiments.spread", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tables", nargs="+", help="reproduce output folders, one seed each")
    p.add_argument("--keras-init", help="folder of <cell>/ PyTorch runs from our initialisation")
    p.add_argument("--pytorch-init", help="reproduce output folder trained with --init pytorch")
    p.add_argument("--output", required=True, help="the markdown file (a .json beside it)")
    args = p.parse_args(argv)
    for t in args.tables:
        if not (Path(t) / "cells").is_dir():
            raise SystemExit(f"error: {t}: not a reproduce output folder (no cells/)")
    rows = spread(args.tables, args.keras_init, args.pytorch_init)
    out = Path(args.output)
    artifacts.write_text(out, render(rows))
    artifacts.write_json(out.with_suffix(".json"), {
        "tables": args.tables, "keras_init": args.keras_init, "pytorch_init": args.pytorch_init,
        "rows": rows})
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
