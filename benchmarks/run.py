"""Side-by-side CPU benchmarks: kws_tf (Keras 3) vs the PyTorch reference.

    python -m benchmarks.run --quick          # gru4 @ 16 kHz, the headline columns
    python -m benchmarks.run                  # gru4 + gru1 at 16 and 8 kHz
    python -m benchmarks.run --ablations      # which speed-up helps (gru4 @ 16 kHz)
    python -m benchmarks.run --sections inference,pipeline
    python -m benchmarks.run --sections steadiness   # the CLI epoch after epoch, 3 processes

Training throughput is measured in one worker process per column; rounds alternate the
columns (A B C D A B C D ...) and the table shows the median of the rounds.  Results are merged
into benchmarks/results/<machine>.json (each entry keyed by section/config/column); how long
each run takes and what it measured: benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import common
from .columns import ABLATIONS, COLUMNS, HEADLINE, choose, is_bf16, reference_column
from .sections import SECTIONS, section_subprocess
from .steadiness import bench_steadiness, print_steadiness
from .macs import forward_macs
from .train_speed import bench_training, print_training
from kws_tf import cli

RESULTS = Path(__file__).resolve().parent / "results"
# The columns and the training section live in columns.py and train_speed.py; these names stay
# importable from here, where the command is.
__all__ = ["ABLATIONS", "COLUMNS", "HEADLINE", "bench_training", "is_bf16", "main",
           "merge_results", "print_training", "reference_column", "versions"]


def versions():
    import importlib.metadata as md
    out = {"python": sys.version.split()[0]}
    for pkg in ("tensorflow", "keras", "torch", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def merge_results(path, new):
    old = json.loads(path.read_text()) if path.exists() else {}
    old.setdefault("runs", [])
    old["machine"], old["versions"] = new["machine"], new["versions"]
    old["macs"] = new["macs"]
    old["runs"].append({k: v for k, v in new.items() if k not in ("machine", "versions", "macs")})
    path.write_text(json.dumps(old, indent=1) + "\n")


def parse_args(argv=None):
    ap = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="gru4@16kHz only, fewer steps")
    ap.add_argument("--ablations", action="store_true",
                    help="compare the TF speed-ups one by one (gru4@16kHz)")
    ap.add_argument("--variants", default="gru4,gru1")
    ap.add_argument("--rates", default="16000,8000")
    ap.add_argument("--columns", default=None, help=f"subset of {','.join(COLUMNS)}")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None, help="batches per timed round")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--sections", default=None,
                    help="comma list of training,steadiness,inference,pipeline (default: "
                         "all; --quick: all but steadiness; --ablations: training)")
    ap.add_argument("--processes", type=int, default=3,
                    help="steadiness: fresh training processes per mode (default 3)")
    ap.add_argument("--epochs", type=int, default=4,
                    help="steadiness: epochs per process; the first (compile) is left out "
                         "(default 4)")
    ap.add_argument("--out", default=None, help="results JSON (default results/<machine>.json)")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--_section", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def describe_machine() -> dict:
    """The CPU's fp32 peak (printed with the load average), for the %-of-peak columns."""
    peak = common.cpu_peak()
    print(f"CPU: {peak['model_name']} (family {peak['family']} model {peak['model']}), "
          f"{peak['cores']} cores; bf16: {peak['bf16_flags'] or 'no'}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"fp32 peak: {peak['derivation']}")
    return peak


def model_macs() -> dict:
    """Forward MACs per clip of the benchmarked models (printed with their shares)."""
    macs = {f"{v}@{r}": forward_macs(v, r, input_rate=16000 if r != 16000 else None)
            for v in ("gru4", "gru1") for r in (16000, 8000)}
    for k, m in macs.items():
        print(f"forward MACs/clip {k}: {m['total'] / 1e6:.1f} M "
              f"(block1 conv {m['block1_conv'] / m['total']:.0%}, GRU {m['gru'] / m['total']:.1%})"
              f"; training ~{6 * m['total'] / 1e9:.2f} GFLOP/clip")
    return macs


def run_sections(args, sections, peak, result) -> None:
    """The training section (worker processes), then pipeline and inference, into ``result``."""
    if "training" in sections:
        configs, steps, columns = choose(args.quick, args.ablations, args.variants, args.rates,
                                         args.steps, args.columns)
        print(f"\ntraining: batch {args.batch}, {steps} step(s)/round, {args.rounds} alternating "
              f"rounds, columns {', '.join(columns)}")
        rows = bench_training(configs, columns, args.rounds, steps, args.batch, peak,
                              lambda s: print(s, flush=True))
        print_training(rows)
        result["training" if not args.ablations else "ablations"] = rows
    if "steadiness" in sections:
        print(f"\nsteadiness: {args.processes} processes x {args.epochs} epochs per mode ...",
              flush=True)
        rows = bench_steadiness(args.processes, args.epochs, bool(peak["bf16_flags"]),
                                lambda s: print(s, flush=True))
        print_steadiness(rows)
        result["steadiness"] = rows
    for sec in ("pipeline", "inference"):
        if sec in sections:
            print(f"\n{sec} ...", flush=True)
            res = section_subprocess(sec, args.quick)
            result[sec] = res
            for k, v in res.items():
                print(f"  {k}: {v}")


def main(argv=None):
    args = parse_args(argv)
    if args._section:  # child process for in-process TF sections
        print("@@" + json.dumps(SECTIONS[args._section](args.quick)), flush=True)
        return 0

    t_start = time.time()
    peak = describe_machine()
    sections = (args.sections.split(",") if args.sections
                else ["training"] if args.ablations
                else ["training", "inference", "pipeline"] if args.quick
                else ["training", "steadiness", "inference", "pipeline"])
    result = {"machine": {**peak, "tag": common.machine_tag(peak)}, "versions": versions(),
              "macs": model_macs(),
              "command": " ".join(["python -m benchmarks.run"] + sys.argv[1:]),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    run_sections(args, sections, peak, result)
    result["wall_s"] = round(time.time() - t_start, 1)
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"\nwall time {result['wall_s']} s; load average {result['loadavg_end']}")
    if not args.no_save:
        path = Path(args.out) if args.out else RESULTS / f"{peak and result['machine']['tag']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        merge_results(path, result)
        print(f"results merged into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
