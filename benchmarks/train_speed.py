"""The training section of the CPU benchmark: one worker process per column, rounds that
alternate the columns (A B C D A B C D ...), the median of the rounds per column."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from .columns import TORCH_MISSING, is_bf16, needs_torch, reference_column, torch_installed
from .macs import forward_macs

ROOT = Path(__file__).resolve().parents[1]


class Worker:
    """A ``benchmarks.worker`` process: one framework and environment, asked one config at a time."""

    def __init__(self, framework, env):
        e = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.p = subprocess.Popen([sys.executable, "-m", "benchmarks.worker", framework],
                                  cwd=ROOT, env=e, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def ask(self, cmd):
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        for line in self.p.stdout:
            if line.startswith("@@"):
                return json.loads(line[2:])
        return {"ok": False, "error": "worker exited"}

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=60)


def train_flops_per_clip(variant, rate, input_rate):
    """3 x forward MACs x 2 FLOPs (forward + input-grad + weight-grad, the usual convention)."""
    return 6 * forward_macs(variant, rate, input_rate=input_rate)["total"]


def input_rate_of(rate: int):
    """The rate clips arrive at: the study resampled 16 kHz clips per batch for 8 kHz models."""
    return 16000 if rate != 16000 else None


def bench_training(configs, columns, rounds, steps, batch, peak, log):
    """One row per (variant, rate, column): clips/s of every round and their median."""
    if not torch_installed():  # say so once per column, not "worker exited" every round
        for name in [n for n, c in columns.items() if needs_torch(c)]:
            log(f"  skip {name}: {TORCH_MISSING}")
        columns = {n: c for n, c in columns.items() if not needs_torch(c)}
    workers = {name: Worker(fw, env) for name, (fw, env, _) in columns.items()}
    samples, loads = {}, []
    try:
        for r in range(rounds):
            # Other jobs on the cores change every figure: the 1-min load average per round.
            loads.append(round(os.getloadavg()[0], 2))
            for variant, rate in configs:
                for name, (_, _, opts) in columns.items():
                    cfg = {"variant": variant, "sample_rate": rate,
                           "input_rate": input_rate_of(rate), "batch": batch, "steps": steps,
                           "options": opts}
                    _measure(workers[name], name, cfg, peak, samples, log, (r, rounds))
    finally:
        for w in workers.values():
            w.close()
    return [_row(variant, rate, name, reps, columns, batch, steps, loads, peak)
            for (variant, rate, name), reps in samples.items()]


def _measure(worker, name, cfg, peak, samples, log, round_of) -> None:
    """One timed round of one column on one config, added to ``samples``."""
    r, rounds = round_of
    variant, rate = cfg["variant"], cfg["sample_rate"]
    # Options a column cannot use on this CPU are skipped, not faked.
    if is_bf16(cfg["options"]) and not peak["bf16_flags"]:
        if r == 0:
            log(f"  skip {name}: CPU has no avx512_bf16/amx_bf16")
        return
    rep = worker.ask({"config": cfg, "warmup": 1})
    reps = samples.setdefault((variant, rate, name), [])
    if not rep["ok"]:
        log(f"  {name} {variant}@{rate}: FAILED {rep['error']}")
        return
    reps.append(rep)
    log(f"  round {r + 1}/{rounds} {variant}@{rate // 1000}kHz {name:24s} "
        f"{rep['clips_per_s']:7.1f} clips/s")


def _row(variant, rate, name, reps, columns, batch, steps, loads, peak) -> dict:
    input_rate = input_rate_of(rate)
    row = {"variant": variant, "sample_rate": rate, "input_rate": input_rate or rate,
           "column": name, "options": columns[name][2], "env": columns[name][1],
           "batch": batch, "steps_per_round": steps,
           "clips_per_s_rounds": [round(x["clips_per_s"], 2) for x in reps],
           "loadavg_1min_rounds": loads}
    if reps:
        cps = statistics.median(x["clips_per_s"] for x in reps)
        gflops = cps * train_flops_per_clip(variant, rate, input_rate) / 1e9
        row.update(clips_per_s=round(cps, 2), gflops=round(gflops, 1),
                   frac_of_peak=round(gflops / peak["peak_gflops_fp32"], 3),
                   peak_rss_mb_after_first=round(reps[0]["peak_rss_mb"]))
    return row


def print_training(rows):
    """The table: clips/s, share of the fp32 peak and the ratio to the PyTorch reference."""
    by = {(r["variant"], r["sample_rate"], r["column"]): r for r in rows}
    cols = list(dict.fromkeys(r["column"] for r in rows))
    print(f"\n{'model':14s}" + "".join(f" {c:>27s}" for c in cols))
    refs = set()
    for variant, rate in dict.fromkeys((r["variant"], r["sample_rate"]) for r in rows):
        line = f"{variant}@{rate // 1000}kHz".ljust(14)
        for c in cols:
            r = by.get((variant, rate, c), {})
            if "clips_per_s" not in r:
                line += f"{'failed/skipped':>28s}"
                continue
            ref = reference_column(rows, r["options"])
            base = by.get((variant, rate, ref), {}).get("clips_per_s")
            ratio = f" {r['clips_per_s'] / base:4.2f}x" if base and ref != c else " " * 6
            refs.add(ref)
            line += f"{r['clips_per_s']:>12.1f}/s {r['frac_of_peak'] * 100:4.0f}%pk{ratio}"
        print(line)
    print("  (clips/s median of rounds; %pk = achieved training GFLOP/s / fp32 peak; "
          f"Nx = vs {' / '.join(sorted(r for r in refs if r))} (bf16 columns vs PyTorch bf16))")
