"""python -m benchmarks.fullsize: ``kws_tf.train`` at Speech Commands' real size, on this CPU.

Builds a folder of 104,837 clips (84,650 training / 9,616 validation / 10,571 testing: every
clip of the shared subset linked again under new speaker names, training x25, validation x16,
testing x11) by hard links, which cost no disk, and reports:

- the decoded cache's build time (first run) and the time to the first training step, on the
  first run and once cached;
- the peak RSS of ``python -m kws_tf.train gru4`` at 16 and 8 kHz up to and through its first
  training steps (the run is stopped ``--steps-seconds`` after its first step), and at 4x the
  dataset's size (``--scales 1,4``);
- the input pipeline's clips/s next to the fit path's training clips/s, and the projected time
  of one full epoch (84,843 training + 9,981 validation clips) on this CPU.

Results are printed and appended to benchmarks/results/fullsize-<machine>.json.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.common import TRAIN_SPLIT_CLIPS, cpu_peak, lscpu, machine_tag
from kws_tf import cli

REPO = Path(__file__).resolve().parents[1]
SUBSET = REPO.parent / "shared" / "data" / "speech_commands_subset"
COPIES = {"training": 25, "validation": 16, "testing": 11}  # -> 104,837 clips
VALIDATION_CLIPS = 9_981  # the real validation split


# ------------------------------------------------------------------------ the folder
def make_fullsize(src: Path, dst: Path, scale: int = 1) -> dict:
    """Hard-link every clip of ``src`` COPIES[split] x ``scale`` times under new speaker names."""
    from kws_tf.data import load_splits

    done = dst / ".fullsize.json"
    if done.is_file():
        return json.loads(done.read_text())
    shutil.rmtree(dst, ignore_errors=True)
    _, splits = load_splits(src)
    lists, counts = {"validation": [], "testing": []}, {}
    for split, files in splits.items():
        n = COPIES[split] * scale
        for k in range(n):
            for rel in files:
                word, name = rel.split("/")
                speaker, rest = name.split("_nohash_")
                # the speaker hash + copy number: a new speaker for every copy, same audio
                new = f"{word}/{speaker}{k:03x}_nohash_{rest}"
                (dst / word).mkdir(parents=True, exist_ok=True)
                os.link(src / rel, dst / new)
                if split in lists:
                    lists[split].append(new)
        counts[split] = len(files) * n
    (dst / "_background_noise_").mkdir(parents=True, exist_ok=True)
    for f in (src / "_background_noise_").glob("*.wav"):
        os.link(f, dst / "_background_noise_" / f.name)
    (dst / "validation_list.txt").write_text("\n".join(lists["validation"]) + "\n")
    (dst / "testing_list.txt").write_text("\n".join(lists["testing"]) + "\n")
    counts["total"] = sum(counts.values())
    done.write_text(json.dumps(counts))
    return counts


# ------------------------------------------------------------------- one CLI run
def train_run(data: Path, cache: Path, out: Path, rate: int, steps_seconds: float) -> dict:
    """``python -m kws_tf.train gru4`` until ``steps_seconds`` after its first step; its timings and peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "kws_tf.train", "gru4", "--data", str(data), "--cache-dir",
           str(cache), "--sample-rate", str(rate), "--epochs", "1", "--output", str(out)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    found = {}

    def read():
        for line in proc.stdout:
            now = time.perf_counter() - start
            m = re.search(r"decoded ([\d,]+) clips in ([\d.]+) s", line)
            if m:
                found["cache_build_s"] = float(m.group(2))
            m = re.search(r"first training step done ([\d.]+) s after start", line)
            if m:
                found["first_step_s"] = float(m.group(1))
                found["first_step_seen"] = now
            if "error:" in line:
                found["error"] = line.strip()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None:
        seen = found.get("first_step_seen")
        if seen is not None and time.perf_counter() - start > seen + steps_seconds:
            proc.send_signal(signal.SIGINT)  # as a user's Ctrl-C: the checkpoint logic runs
            break
        time.sleep(0.5)
    _, status, usage = os.wait4(proc.pid, 0)
    reader.join(5)
    found.pop("first_step_seen", None)
    return {"rate": rate, "peak_rss_gb": round(usage.ru_maxrss / 1e6, 2),
            "wall_s": round(time.perf_counter() - start, 1), **found}


# -------------------------------------------------------------- in-process rates
def pipeline_rate(data_root: Path, cache: Path, rate: int, batches: int = 60) -> float:
    """Clips/s of the training input pipeline alone (read, scale, resample, prefetch)."""
    from kws_tf.training import train_batches, load_training_data

    data = load_training_data(data_root, rate, cache_dir=cache, verbose=False)
    ds = train_batches(data["training"], 100, 0, 0, False, rate, data_root, batches + 5)
    it = iter(ds)
    for _ in range(5):
        next(it)
    t, n = time.perf_counter(), 0
    for x, _ in it:
        n += int(x.shape[0])
    return n / (time.perf_counter() - t)


def training_rate(data_root: Path, cache: Path, rate: int, steps: int, tmp: Path) -> dict:
    """Training clips/s of the fit path (steps 3.. of one epoch) and evaluation clips/s."""
    import keras
    import numpy as np

    from kws_tf.training import (FitConfig, SplitArrays, TrainingData, fit, load_training_data,
                                 predict_scores)

    full = load_training_data(data_root, rate, cache_dir=cache, verbose=False)
    val = full["validation"]
    rows = np.arange(200)
    small = SplitArrays(val.read(rows) / np.float32(32768), val.labels[rows])
    if rate != 16000:
        from kws_tf.data import stream_batches

        small = SplitArrays(np.concatenate([x for x, _ in stream_batches(
            val, rows, 100, rate).as_numpy_iterator()]), val.labels[rows])
    data = TrainingData(data_root, full.labels, rate,
                        {"training": full["training"], "validation": small})
    times = []

    class StepTimes(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter())

    shutil.rmtree(tmp, ignore_errors=True)
    run = fit("gru4", data, FitConfig(sample_rate=rate, epochs=1, max_steps_per_epoch=steps,
                                      verbose=0), output=tmp, callbacks=[StepTimes()])
    train = 100 * (len(times) - 3) / (times[-1] - times[2])
    first = dataclasses.replace(val, labels=val.labels[:1000], files=val.files[:1000])
    predict_scores(run.model, first)  # compiles the predict step
    t = time.perf_counter()
    predict_scores(run.model, first)
    evaluate = 1000 / (time.perf_counter() - t)
    return {"train_clips_per_s": round(train, 1), "eval_clips_per_s": round(evaluate, 1)}


# ------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    p = cli.ArgumentParser(prog="python -m benchmarks.fullsize", description=cli.first_paragraph(__doc__))
    p.add_argument("--folder", default="/tmp/kws-fullsize", help="where the linked dataset goes")
    p.add_argument("--source", default=str(SUBSET))
    p.add_argument("--scales", default="1,4", help="dataset sizes to compare peak RSS at (x 104,837)")
    p.add_argument("--steps-seconds", type=float, default=30.0,
                   help="how long each CLI run trains after its first step before it is stopped")
    p.add_argument("--train-steps", type=int, default=15, help="steps timed for training clips/s")
    p.add_argument("--keep-cache", action="store_true", help="reuse an existing decoded cache")
    args = p.parse_args(argv)
    base = Path(args.folder)
    info = lscpu()
    peak = cpu_peak(info)
    flags = set(info.get("Flags", "").split())
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": info.get("Model name"),
              "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}),
              "cpus": info.get("CPU(s)"), "runs": {}}
    print(f"CPU: {result['cpu']} ({result['cpus']} CPUs; {' '.join(result['cpu_flags'])})")
    scales = [int(s) for s in args.scales.split(",")]
    for scale in scales:
        folder = base / f"x{scale}"
        t = time.perf_counter()
        counts = make_fullsize(Path(args.source), folder, scale)
        print(f"x{scale}: {counts['total']:,} clips in {folder} ({time.perf_counter() - t:.0f} s to link)")
        result.setdefault("clips", {})[f"x{scale}"] = counts
    cache = base / "cache"
    if not args.keep_cache:
        shutil.rmtree(cache, ignore_errors=True)
    x1 = base / "x1"
    runs = result["runs"]
    runs["16k first run"] = train_run(x1, cache, base / "run", 16000, args.steps_seconds)
    print("16 kHz, first run:", runs["16k first run"])
    runs["16k cached"] = train_run(x1, cache, base / "run", 16000, args.steps_seconds)
    print("16 kHz, cached:", runs["16k cached"])
    runs["8k cached"] = train_run(x1, cache, base / "run", 8000, args.steps_seconds)
    print("8 kHz, cached:", runs["8k cached"])
    for scale in scales[1:]:
        from kws_tf.data import open_decoded

        t = time.perf_counter()
        open_decoded(base / f"x{scale}", cache_dir=cache)
        result[f"x{scale}_cache_build_s"] = round(time.perf_counter() - t, 1)
        runs[f"16k cached x{scale}"] = train_run(base / f"x{scale}", cache, base / "run", 16000,
                                                 args.steps_seconds)
        print(f"16 kHz, cached, x{scale}:", runs[f"16k cached x{scale}"])
    result["rates"] = {rate: _rates(x1, cache, rate, args.train_steps, base / f"fit-{rate}")
                       for rate in (16000, 8000)}
    print_table(result)
    out = REPO / "benchmarks" / "results" / f"fullsize-{machine_tag(peak)}.json"
    history = json.loads(out.read_text()) if out.is_file() else []
    out.write_text(json.dumps(history + [result], indent=2) + "\n")
    print(f"\nappended to {out}")
    return 0


def _rates(root: Path, cache: Path, rate: int, train_steps: int, output: Path) -> dict:
    """The input pipeline's and training's clips/s at ``rate``, and the epoch they project."""
    pipe = pipeline_rate(root, cache, rate)
    fitr = training_rate(root, cache, rate, train_steps, output)
    epoch_s = TRAIN_SPLIT_CLIPS / fitr["train_clips_per_s"] + VALIDATION_CLIPS / fitr["eval_clips_per_s"]
    rates = {"pipeline_clips_per_s": round(pipe, 1), **fitr,
             "pipeline_over_training": round(pipe / fitr["train_clips_per_s"], 1),
             "projected_epoch_min": round(epoch_s / 60, 1)}
    print(f"{rate} Hz:", rates)
    return rates


def print_table(r: dict) -> None:
    print(f"\n## Full-size training ({r['clips']['x1']['total']:,} clips), {r['cpu']}, {r['cpus']} CPUs\n")
    print("| run | cache build | first training step | peak RSS |")
    print("|---|---|---|---|")
    for name, run in r["runs"].items():
        build = f"{run['cache_build_s']:.0f} s" if "cache_build_s" in run else "(cached)"
        first = f"{run['first_step_s']:.0f} s" if "first_step_s" in run else run.get("error", "?")
        print(f"| {name} | {build} | {first} | {run['peak_rss_gb']:.2f} GB |")
    print("\n| rate | pipeline clips/s | training clips/s | ratio | eval clips/s | projected epoch |")
    print("|---|---|---|---|---|---|")
    for rate, x in r["rates"].items():
        print(f"| {rate // 1000} kHz | {x['pipeline_clips_per_s']:,.0f} | {x['train_clips_per_s']:.1f} | "
              f"{x['pipeline_over_training']:.0f}x | {x['eval_clips_per_s']:.0f} | "
              f"{x['projected_epoch_min']:.0f} min |")


if __name__ == "__main__":
    sys.exit(main())
