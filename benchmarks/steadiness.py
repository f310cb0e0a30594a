"""The steadiness section of the CPU benchmark: the training CLI itself, epoch after epoch.

``python -m kws_tf.train gru4`` runs in several fresh processes (float32, and
``--mixed-precision`` where the CPU has bf16) on a folder of 600 real clips, hard links into
the shared subset; every epoch after the first (which compiles) gives the CLI's own clips/s
(steps, validation and ``fit()``'s set-up included, history.csv ``seconds``) beside its bare
step rate (``step_seconds``).  Between the processes the PyTorch worker trains the same model
for the same 6 steps, so both frameworks share the run's CPU and load.

    python -m benchmarks.run --sections steadiness
"""
from __future__ import annotations

import csv
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .columns import MALLOC_ENV, TORCH_MISSING, torch_installed
from .train_speed import Worker

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ROOT.parent / "shared" / "data" / "speech_commands_subset"
TRAIN_CLIPS, VALIDATION_CLIPS, BATCH = 600, 100, 100
# mode -> (train CLI flags, PyTorch column options)
MODES = {"float32": ([], {}), "bf16": (["--mixed-precision"], {"amp": True})}


def make_mini(src: Path, dst: Path, train: int = TRAIN_CLIPS, validation: int = VALIDATION_CLIPS) -> Path:
    """A Speech Commands folder of ``train`` + ``validation`` real clips of ``src`` (hard links)."""
    from kws_tf.data import load_splits

    words, splits = load_splits(src)
    picks = {s: random.Random(0).sample(sorted(splits[s]), n)
             for s, n in (("training", train), ("validation", validation))}
    for rel in picks["training"] + picks["validation"]:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(src / rel, dst / rel)
    for w in words:  # every word keeps its folder, so the model has the same 35 labels
        (dst / w).mkdir(exist_ok=True)
    (dst / "validation_list.txt").write_text("\n".join(picks["validation"]) + "\n")
    (dst / "testing_list.txt").write_text("")
    return dst


def steal_seconds() -> float:
    """CPU time the hypervisor gave to other guests (/proc/stat), summed over cores."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def cli_epochs(data: Path, cache: Path, out: Path, flags, epochs: int) -> dict:
    """One fresh ``kws_tf.train`` process: every epoch's seconds and step seconds."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "kws_tf.train", "gru4", "--data", str(data), "--cache-dir",
           str(cache), "--epochs", str(epochs), "--output", str(out), "--quiet", *flags]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    steal, start = steal_seconds(), time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall, steal = time.perf_counter() - start, steal_seconds() - steal
    if done.returncode:
        return {"error": (done.stderr or done.stdout)[-1500:]}
    rows = list(csv.DictReader(open(out / "history.csv")))
    return {"wall_s": round(wall, 1), "steal_s": round(steal, 2),
            "seconds": [float(r["seconds"]) for r in rows],
            "step_seconds": [float(r["step_seconds"]) for r in rows]}


def spread(values) -> dict:
    med = statistics.median(values)
    return {"min": round(min(values), 1), "median": round(med, 1), "max": round(max(values), 1),
            "min_over_median": round(min(values) / med, 3)}


def summarise(mode: str, runs: list, torch_rates: list) -> dict:
    """Every later epoch's clips/s (CLI and steps), their spread, the overhead, PyTorch beside."""
    ok = [r for r in runs if "seconds" in r]
    cli = [TRAIN_CLIPS / s for r in ok for s in r["seconds"][1:]]
    steps = [TRAIN_CLIPS / s for r in ok for s in r["step_seconds"][1:]]
    overhead = [a - b for r in ok for a, b in zip(r["seconds"][1:], r["step_seconds"][1:])]
    row = {"mode": mode, "processes": len(ok), "epochs_per_process": len(ok[0]["seconds"]) if ok else 0,
           "errors": [r["error"] for r in runs if "error" in r], "runs": runs}
    if cli:
        row.update(cli_clips_per_s=spread(cli), step_clips_per_s=spread(steps),
                   overhead_s={"median": round(statistics.median(overhead), 3),
                               "max": round(max(overhead), 3)},
                   cli_clips_per_s_epochs=[round(x, 1) for x in cli])
    if torch_rates:
        row["torch_clips_per_s"] = spread(torch_rates)
        row["torch_clips_per_s_rounds"] = [round(x, 1) for x in torch_rates]
        if cli:
            row["cli_over_torch"] = round(row["cli_clips_per_s"]["median"]
                                          / row["torch_clips_per_s"]["median"], 2)
    return row


def bench_steadiness(processes: int, epochs: int, bf16: bool, log, src: Path = SUBSET) -> list:
    """``processes`` fresh CLI processes per mode, alternating the modes, with PyTorch between."""
    modes = [m for m in MODES if bf16 or m != "bf16"]
    runs = {m: [] for m in modes}
    torch = {m: [] for m in modes}
    tmp = Path(tempfile.mkdtemp(prefix="kws-steadiness-"))
    worker = Worker("torch", MALLOC_ENV) if torch_installed() else None
    if worker is None:  # the CLI's epochs still run; the PyTorch column beside them does not
        log(f"  no PyTorch column: {TORCH_MISSING}")
    try:
        data = make_mini(src, tmp / "data")
        for p in range(processes):
            for mode in modes:
                flags, opts = MODES[mode]
                run = cli_epochs(data, tmp / "cache", tmp / f"run-{mode}", flags, epochs)
                runs[mode].append(run)
                rates = [f"{TRAIN_CLIPS / s:.1f}" for s in run.get("seconds", [])]
                log(f"  process {p + 1}/{processes} {mode:8s} epochs clips/s {' '.join(rates)}"
                    f"  (steal {run.get('steal_s', '?')} s)" if rates else
                    f"  process {p + 1}/{processes} {mode}: FAILED {run['error'][-300:]}")
                cfg = {"variant": "gru4", "sample_rate": 16000, "input_rate": None,
                       "batch": BATCH, "steps": TRAIN_CLIPS // BATCH, "options": opts}
                for _ in range(epochs - 1 if worker else 0):
                    rep = worker.ask({"config": cfg, "warmup": 1})
                    if rep["ok"]:
                        torch[mode].append(rep["clips_per_s"])
    finally:
        if worker:
            worker.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return [summarise(m, runs[m], torch[m]) for m in modes]


def print_steadiness(rows) -> None:
    print("\nsteadiness: python -m kws_tf.train gru4 (16 kHz, batch 100) on 600 real clips, "
          "every epoch after the first; PyTorch (same allocator setting) on the same 6 steps")
    print(f"{'mode':8s} {'epochs':>6s} {'CLI clips/s min/med/max':>24s} {'min/med':>7s} "
          f"{'steps clips/s med':>17s} {'overhead s med/max':>18s} {'torch med':>9s} {'CLI/torch':>9s}")
    for r in rows:
        if "cli_clips_per_s" not in r:
            print(f"{r['mode']:8s} no epoch: {r['errors'][:1]}")
            continue
        c, o = r["cli_clips_per_s"], r["overhead_s"]
        t = r.get("torch_clips_per_s", {}).get("median", float("nan"))
        print(f"{r['mode']:8s} {len(r['cli_clips_per_s_epochs']):6d} "
              f"{c['min']:>8.1f}/{c['median']:.1f}/{c['max']:.1f} {c['min_over_median']:7.2f} "
              f"{r['step_clips_per_s']['median']:17.1f} {o['median']:9.2f}/{o['max']:.2f} "
              f"{t:9.1f} {r.get('cli_over_torch', float('nan')):9.2f}")
