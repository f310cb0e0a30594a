"""Side-by-side CPU benchmarks: kws_tf (Keras 3) vs the PyTorch reference.

    python -m benchmarks.run --quick          # gru4 @ 16 kHz, 3 columns; ~3-4 min on 2 idle cores
    python -m benchmarks.run                  # gru4 + gru1 at 16 and 8 kHz
    python -m benchmarks.run --ablations      # which speed-up helps (gru4 @ 16 kHz)
    python -m benchmarks.run --sections inference,pipeline

Training throughput is measured in one worker process per column; rounds alternate the
columns (A B C D A B C D ...) and the table shows the median of the rounds.  Results are merged
into benchmarks/results/<machine>.json (each entry keyed by section/config/column).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from kws_tf import xla_clusters
from kws_tf.cpu_memory import GLIBC_ENV

from . import common
from .torch_reference import forward_macs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"

# The fit-path settings this benchmark recommends (keras-tf-opt), see README.md.
OPT = {"fast": True, "jit_compile": True}
# --mixed-precision as the fit path runs it on a CPU (FitConfig.speed_defaults): the fast
# build, XLA fusing the element-wise ops and oneDNN running the convolutions (CLUSTERS env).
OPT_BF16 = {"fast": True, "jit_compile": False, "mixed_precision": "mixed_bfloat16"}
# --mixed-precision from 2026-11-27 12:00 to 12:45: the float32 settings plus the policy
# (the whole step compiled by XLA, its convolutions through float32).
JIT_BF16 = {**OPT, "mixed_precision": "mixed_bfloat16"}
# --mixed-precision on a CPU from 2026-11-27 10:00 to 12:00: the plain build without XLA
# (TF's oneDNN bf16 kernels), slower than XLA once block 1 was folded.
PLAIN_BF16 = {"fast": False, "jit_compile": False, "mixed_precision": "mixed_bfloat16"}
TF = {"KERAS_BACKEND": "tensorflow"}
# kws_tf.cpu_memory.reuse_cpu_memory(), which the fit path calls by default.
REUSE = {**TF, "KWS_REUSE_CPU_MEMORY": "1"}
# kws_tf.xla_clusters.request(), which the training CLIs call for --mixed-precision.
CLUSTERS = {**REUSE, "TF_XLA_FLAGS": " ".join(xla_clusters.FLAGS)}
# The same glibc half of it for PyTorch (which has no BFC switch): never serve big blocks with
# mmap, never trim.  Not PyTorch's default; shown so the comparison is fair both ways.
MALLOC_ENV = GLIBC_ENV

# column -> (worker framework, extra env, trainer options)
COLUMNS = {
    "keras-tf": ("keras", TF, {}),
    "keras-tf-opt": ("keras", REUSE, OPT),
    "torch": ("torch", {}, {}),
    "torch-malloc": ("torch", MALLOC_ENV, {}),
    # bf16 columns run only where lscpu lists avx512_bf16 or amx_bf16 (else: skipped).
    "keras-tf-opt-bf16": ("keras", CLUSTERS, OPT_BF16),
    "torch-malloc-bf16": ("torch", MALLOC_ENV, {"amp": True}),
    "keras-torch": ("keras", {"KERAS_BACKEND": "torch"}, {}),
}
# The headline (--quick and the default): ours vs PyTorch as shipped, with our allocator
# setting, and (where the CPU has bf16) both in bf16.
HEADLINE = ("keras-tf-opt", "torch", "torch-malloc", "keras-tf-opt-bf16", "torch-malloc-bf16")
ABLATIONS = {
    "tf plain": ("keras", TF, {}),
    "tf jit": ("keras", TF, {"jit_compile": True}),
    "tf fast": ("keras", TF, {"fast": True}),
    "tf fast+jit": ("keras", TF, OPT),
    "tf fast+jit spe=2": ("keras", TF, {**OPT, "steps_per_execution": 2}),
    "tf fast+jit inter_op=1": ("keras", {**TF, "KWS_INTER_OP_THREADS": "1"}, OPT),
    "tf fast+jit reuse-mem inter_op=1": ("keras", {**REUSE, "KWS_INTER_OP_THREADS": "1"}, OPT),
    "tf fast+jit bf16": ("keras", TF, JIT_BF16),
    # bf16 without XLA: TF's own (oneDNN) kernels, which have bf16 convolutions/matmuls;
    # XLA's CPU convolutions do not use oneDNN's bf16 path.
    "tf fast bf16 no-jit": ("keras", REUSE, OPT_BF16),  # keras-tf-opt-bf16 without the clusters
    "tf plain bf16 no-jit": ("keras", REUSE, PLAIN_BF16),
    "tf fast+jit bf16 reuse-mem": ("keras", REUSE, JIT_BF16),
    # Allocation: block 1's 272 MB activations are malloc'd per step; glibc serves them with
    # fresh mmap pages, so every step page-faults ~1 GB of zeroed memory (cpu_memory.py).
    "tf fast+jit bfc": ("keras", {**TF, "TF_CPU_ALLOCATOR_USE_BFC": "true"}, OPT),
    "tf fast+jit malloc": ("keras", {**TF, **MALLOC_ENV}, OPT),
    "tf fast+jit reuse-mem": ("keras", REUSE, OPT),
    "tf plain reuse-mem": ("keras", REUSE, {}),
    "torch": ("torch", {}, {}),
    "torch malloc": ("torch", MALLOC_ENV, {}),
    "torch malloc bf16": ("torch", MALLOC_ENV, {"amp": True}),
}


def is_bf16(opts: dict) -> bool:
    """A column that computes in bfloat16 (Keras mixed_bfloat16 or torch.autocast bf16)."""
    return opts.get("mixed_precision") == "mixed_bfloat16" or bool(opts.get("amp"))


class Worker:
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


def bench_training(configs, columns, rounds, steps, batch, peak, log):
    workers = {name: Worker(fw, env) for name, (fw, env, _) in columns.items()}
    samples, loads = {}, []
    try:
        for r in range(rounds):
            # Other jobs on the cores change every figure: the 1-min load average per round.
            loads.append(round(os.getloadavg()[0], 2))
            for variant, rate in configs:
                input_rate = 16000 if rate != 16000 else None  # study resampled per batch
                for name, (_, _, opts) in columns.items():
                    # Options a column cannot use on this CPU are skipped, not faked.
                    if is_bf16(opts) and not peak["bf16_flags"]:
                        if r == 0:
                            log(f"  skip {name}: CPU has no avx512_bf16/amx_bf16")
                        continue
                    cfg = {"variant": variant, "sample_rate": rate, "input_rate": input_rate,
                           "batch": batch, "steps": steps, "options": opts}
                    rep = workers[name].ask({"config": cfg, "warmup": 1})
                    key = (variant, rate, name)
                    if not rep["ok"]:
                        log(f"  {name} {variant}@{rate}: FAILED {rep['error']}")
                        samples.setdefault(key, [])
                        continue
                    samples.setdefault(key, []).append(rep)
                    log(f"  round {r + 1}/{rounds} {variant}@{rate // 1000}kHz {name:24s} "
                        f"{rep['clips_per_s']:7.1f} clips/s")
    finally:
        for w in workers.values():
            w.close()
    rows = []
    for (variant, rate, name), reps in samples.items():
        input_rate = 16000 if rate != 16000 else None
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
        rows.append(row)
    return rows


REFS = ("torch-malloc", "torch malloc", "torch")  # PyTorch given our allocator setting first
BF16_REFS = ("torch-malloc-bf16", "torch malloc bf16")


def reference_column(rows, column_opts):
    """The PyTorch column a row is compared with: with our allocator setting where measured,
    and in bf16 (autocast) for bf16 columns where that was measured."""
    present = {r["column"] for r in rows if "clips_per_s" in r}
    pool = (BF16_REFS + REFS) if is_bf16(column_opts) else REFS
    return next((c for c in pool if c in present), None)


def print_training(rows):
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


# ------------------------------------------------------------------- inference + pipeline
def section_subprocess(section, args):
    """Run an in-process TF section in a fresh interpreter, return its JSON."""
    cmd = [sys.executable, "-m", "benchmarks.run", "--_section", section]
    if args.quick:
        cmd.append("--quick")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "tensorflow",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("@@"):
            return json.loads(line[2:])
    return {"error": out.stderr[-2000:]}


def _median_time(fn, n):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def run_inference(quick):
    import tempfile
    import tensorflow as tf
    import torch
    from kws_tf import build_model
    from .torch_reference import TorchKWS, copy_from_keras

    n1, nb, big = (10, 2, 32) if quick else (30, 3, 100)
    model = build_model("gru4", 16000)
    x1, _ = common.random_batch(1, 16000)
    xb, _ = common.random_batch(big, 16000)
    res = {"variant": "gru4", "sample_rate": 16000, "batch": big}

    def record(name, f1, fb):
        try:
            f1(); fb()  # warm-up / trace
            res[name] = {"latency_ms_batch1": round(_median_time(f1, n1) * 1e3, 2),
                         "clips_per_s_batch": round(big / _median_time(fb, nb), 1)}
        except Exception as e:  # record why, keep going
            res[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}

    record("keras (model.predict_on_batch)", lambda: model.predict_on_batch(x1),
           lambda: model.predict_on_batch(xb))
    serve = tf.function(lambda x: model(x, training=False), jit_compile=True)
    record("keras tf.function+XLA", lambda: serve(x1).numpy(), lambda: serve(xb).numpy())
    tmp = Path(tempfile.mkdtemp())
    try:
        model.export(str(tmp / "sm"), verbose=False)
        sm = tf.saved_model.load(str(tmp / "sm"))
        record("SavedModel serve", lambda: sm.serve(x1).numpy(), lambda: sm.serve(xb).numpy())
    except Exception as e:
        res["SavedModel serve"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    # The export path's TFLite files (batch 1, unrolled GRU, builtin ops): a plain Keras GRU
    # only converts with Flex ops.  Batch throughput is the interpreter run clip by clip.
    from kws_tf.export import convert_tflite
    from kws_tf.inference.tflite import TFLiteModel

    for name, quant in (("TFLite float32", "none"), ("TFLite dynamic range", "dynamic"),
                        ("TFLite int8", "int8")):
        try:
            blob, _ = convert_tflite(model, quant, xb[:16])
            lite = TFLiteModel(blob, num_threads=os.cpu_count())
            record(name, lambda: lite.probabilities(x1), lambda: lite.probabilities(xb))
            res[name]["size_kb"] = round(len(blob) / 1024)
        except Exception as e:
            res[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    tm = copy_from_keras(TorchKWS("gru4", 16000), model).eval()
    t1, tb = torch.tensor(x1), torch.tensor(xb)
    with torch.inference_mode():
        record("torch eager", lambda: tm(t1), lambda: tm(tb))
        try:
            traced = torch.jit.trace(tm, t1)
            record("torch.jit.trace", lambda: traced(t1), lambda: traced(tb))
        except Exception as e:
            res["torch.jit.trace"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    if not quick:
        try:
            comp = torch.compile(tm)
            with torch.inference_mode():
                record("torch.compile", lambda: comp(t1), lambda: comp(tb))
        except Exception as e:
            res["torch.compile"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    return res


def run_pipeline(quick):
    """Data pipeline clips/s: kws_tf.data on the real subset if present, else tf.data on arrays."""
    import tensorflow as tf
    res = {}
    subset = ROOT.parent / "shared" / "data" / "speech_commands_subset"
    batch = 100

    def drain(ds, max_batches):
        n, t0 = 0, time.perf_counter()
        for i, (xb, *_ ) in enumerate(ds):
            n += int(xb.shape[0])
            if i + 1 >= max_batches:
                break
        return n / (time.perf_counter() - t0)

    try:
        from kws_tf import data as kdata
        ds = kdata.make_dataset(str(subset), "train", 16000, batch)
        first = drain(ds, 10 ** 9)
        cached = statistics.median(drain(ds, 10 ** 9) for _ in range(3))
        res["kws_tf.data.make_dataset(train, 16 kHz)"] = {
            "first_pass_clips_per_s": round(first, 1), "cached_clips_per_s": round(cached, 1)}
    except Exception as e:
        res["kws_tf.data.make_dataset"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    x, y = common.random_batch(2000 if quick else 8000, 16000)
    ds = (tf.data.Dataset.from_tensor_slices((x, y)).cache().shuffle(2000)
          .batch(batch).prefetch(tf.data.AUTOTUNE))
    drain(ds, 10 ** 9)
    res["tf.data on in-memory arrays (cache+shuffle+batch+prefetch)"] = {
        "cached_clips_per_s": round(statistics.median(drain(ds, 10 ** 9) for _ in range(3)), 1)}
    from kws_tf import Resample
    rs = Resample(16000, 8000)
    ds8 = ds.map(lambda a, b: (rs(a), b), num_parallel_calls=tf.data.AUTOTUNE)
    drain(ds8, 10 ** 9)
    res["same + Resample(16000->8000) in map"] = {
        "cached_clips_per_s": round(statistics.median(drain(ds8, 10 ** 9) for _ in range(3)), 1)}
    return res


# ----------------------------------------------------------------------------------- main
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
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
                    help="comma list of training,inference,pipeline (default: all; "
                         "--ablations: training)")
    ap.add_argument("--out", default=None, help="results JSON (default results/<machine>.json)")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--_section", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._section:  # child process for in-process TF sections
        fn = {"inference": run_inference, "pipeline": run_pipeline}[args._section]
        print("@@" + json.dumps(fn(args.quick)), flush=True)
        return 0

    t_start = time.time()
    peak = common.cpu_peak()
    print(f"CPU: {peak['model_name']} (family {peak['family']} model {peak['model']}), "
          f"{peak['cores']} cores; bf16: {peak['bf16_flags'] or 'no'}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"fp32 peak: {peak['derivation']}")
    if args.quick:
        # keras-torch is the slowest column and not the comparison --quick is for; add it
        # back with --columns keras-tf,keras-tf-opt,torch,keras-torch.
        configs, steps = [("gru4", 16000)], args.steps or 1
        columns = {k: COLUMNS[k] for k in HEADLINE}
    else:
        configs = [(v, int(r)) for v in args.variants.split(",") for r in args.rates.split(",")]
        steps = args.steps or 2
        columns = {k: COLUMNS[k] for k in ("keras-tf", *HEADLINE, "keras-torch")}
    if args.ablations:
        configs, columns = [("gru4", 16000)], dict(ABLATIONS)
    if args.columns:
        # Any headline or ablation column may be named (ablation names win on a clash).
        pool = {**COLUMNS, **ABLATIONS} if args.ablations else {**ABLATIONS, **COLUMNS}
        columns = {k: pool[k] for k in args.columns.split(",")}
    sections = (args.sections.split(",") if args.sections
                else ["training"] if args.ablations else ["training", "inference", "pipeline"])
    macs = {f"{v}@{r}": forward_macs(v, r, input_rate=16000 if r != 16000 else None)
            for v in ("gru4", "gru1") for r in (16000, 8000)}
    for k, m in macs.items():
        print(f"forward MACs/clip {k}: {m['total'] / 1e6:.1f} M "
              f"(block1 conv {m['block1_conv'] / m['total']:.0%}, GRU {m['gru'] / m['total']:.1%})"
              f"; training ~{6 * m['total'] / 1e9:.2f} GFLOP/clip")
    result = {"machine": {**peak, "tag": common.machine_tag(peak)}, "versions": versions(),
              "macs": macs, "command": " ".join(["python -m benchmarks.run"] + sys.argv[1:]),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}

    if "training" in sections:
        print(f"\ntraining: batch {args.batch}, {steps} step(s)/round, {args.rounds} alternating "
              f"rounds, columns {', '.join(columns)}")
        rows = bench_training(configs, columns, args.rounds, steps, args.batch, peak,
                              lambda s: print(s, flush=True))
        print_training(rows)
        result["training" if not args.ablations else "ablations"] = rows
    for sec in ("pipeline", "inference"):
        if sec in sections:
            print(f"\n{sec} ...", flush=True)
            res = section_subprocess(sec, args)
            result[sec] = res
            for k, v in res.items():
                print(f"  {k}: {v}")
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
