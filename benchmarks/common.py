"""Pieces shared by the CPU benchmark (run.py), its workers and the GPU script.

Nothing here imports TensorFlow at module level: gpu.py runs on machines with only
PyTorch + keras (KERAS_BACKEND=torch).
"""
from __future__ import annotations

import os
import platform
import re
import subprocess
import time

import numpy as np

TRAIN_SPLIT_CLIPS = 84_843  # Speech Commands v2 training split (the study's epoch)


# --------------------------------------------------------------------------------- machine
def lscpu() -> dict:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    info = {}
    for line in out.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info[k.strip()] = v.strip()
    return info


def cpu_peak(info: dict | None = None) -> dict:
    """fp32 peak FLOP/s = cores x GHz x FMA units x fp32 lanes x 2 (an FMA is 2 FLOPs).

    GHz: lscpu "CPU max MHz" if the VM exposes it, else the "@ x GHz" in the model name,
    else /proc/cpuinfo "cpu MHz" (on KVM guests the TSC clock, = BogoMIPS / 2); boost clocks
    above it are not counted.  Lanes: 16 with avx512f, 8 with avx2, 4 otherwise.  FMA units
    per core: 2 (Intel Skylake-SP+ server parts, AMD Zen 2-5).  AMD Zen 4 (family 25 with
    avx512f) executes AVX-512 as two 256-bit halves, so it counts as 8 lanes x 2 units.
    """
    info = lscpu() if info is None else info
    flags = set(info.get("Flags", "").split())
    cores = int(info.get("CPU(s)", os.cpu_count() or 1))
    ghz, src = None, None
    if info.get("CPU max MHz"):
        ghz, src = float(info["CPU max MHz"]) / 1000, "lscpu CPU max MHz"
    if ghz is None:
        m = re.search(r"@\s*([\d.]+)\s*GHz", info.get("Model name", ""))
        if m:
            ghz, src = float(m.group(1)), "model name"
    if ghz is None:
        try:
            with open("/proc/cpuinfo") as f:
                m = re.search(r"cpu MHz\s*:\s*([\d.]+)", f.read())
            ghz, src = float(m.group(1)) / 1000, "/proc/cpuinfo cpu MHz"
        except (OSError, AttributeError):
            ghz, src = 2.0, "assumed"
    vendor = info.get("Vendor ID", "")
    family = int(info.get("CPU family", "0") or 0)
    if "avx512f" in flags and not (vendor == "AuthenticAMD" and family < 26):
        lanes, isa = 16, "AVX-512"
    elif "avx2" in flags or "avx512f" in flags:
        lanes, isa = 8, "AVX2" if "avx512f" not in flags else "AVX-512 (double-pumped 256-bit)"
    else:
        lanes, isa = 4, "SSE"
    fma_units = 2 if "fma" in flags else 1
    flop_per_cycle = fma_units * lanes * 2
    peak = cores * ghz * flop_per_cycle
    bf16 = sorted(flags & {"avx512_bf16", "amx_bf16"})
    return {
        "model_name": info.get("Model name", platform.processor()), "vendor": vendor,
        "family": family, "model": info.get("Model", ""), "cores": cores, "ghz": round(ghz, 3),
        "ghz_source": src, "isa": isa, "fp32_lanes": lanes, "fma_units": fma_units,
        "bf16_flags": bf16, "peak_gflops_fp32": round(peak, 1),
        "derivation": (f"{cores} cores x {ghz:.3f} GHz ({src}) x {fma_units} FMA units x "
                       f"{lanes} fp32 lanes ({isa}) x 2 = {peak:.1f} GFLOP/s"),
    }


def machine_tag(peak: dict) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", peak["model_name"].lower()).strip("-") or "cpu"
    isa = peak["isa"].split()[0].lower().replace("-", "")
    return f"{name}-{isa}-{peak['cores']}c"


# ----------------------------------------------------------------------------- workloads
def write_result(result: dict, dest) -> None:
    """A benchmark's JSON, written whole or not at all, and the line saying where."""
    from kws_tf import artifacts

    artifacts.write_json(dest, result)
    print(f"wrote {dest}")


def latency_ms(fn, repeats: int, warmup: int = 10) -> dict:
    """Median and 95th-percentile wall time of ``fn()`` in ms, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return {"median_ms": float(np.median(times)), "p95_ms": float(np.percentile(times, 95)),
            "repeats": repeats}


def random_batch(batch, samples, num_classes=35, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (batch, samples)).astype("float32")
    y = rng.integers(0, num_classes, batch).astype("int32")
    return x, y


class KerasTrainer:
    """Keras ``fit`` on in-memory random clips, the same compile the fit path uses."""

    def __init__(self, variant, sample_rate, input_rate=None, batch=100, steps=2, fused=False,
                 jit_compile=False, steps_per_execution=1, mixed_precision=None):
        import keras
        from kws_tf import build_model
        from kws_tf.training import FitConfig, compile_model
        from kws_tf.variants import get_variant
        if mixed_precision:
            keras.mixed_precision.set_global_policy(mixed_precision)
        else:
            keras.mixed_precision.set_global_policy("float32")
        v = get_variant(variant)
        self.batch, self.steps = batch, steps
        self.model = build_model(v, sample_rate, input_rate=input_rate, fused=fused)
        # The fit path's own compile: the recipe's optimizer (Adam with PyTorch's eps,
        # SGD with coupled weight decay), one loss for both heads, the accuracy metric.
        compile_model(self.model, FitConfig().recipe(v), 849, jit_compile, steps_per_execution)
        # One extra execution in front: each ``fit`` call's first step re-traces (and, with
        # XLA, re-compiles: 3-10 s here) before the steady state an epoch of 849 steps sees.
        self.spe = int(steps_per_execution)
        x, y = random_batch(batch, input_rate or sample_rate)
        n = steps + self.spe
        self.x, self.y = np.tile(x, (n, 1)), np.tile(y, n)
        self._marks = []
        trainer = self

        class _Clock(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                trainer._marks.append(time.perf_counter())

        self._clock = _Clock()

    def run(self):
        """Seconds for ``steps`` steady-state steps of one ``fit`` (first execution excluded)."""
        self._marks = []
        self.model.fit(self.x, self.y, batch_size=self.batch, epochs=1, verbose=0,
                       shuffle=False, callbacks=[self._clock])
        if len(self._marks) < 2:
            raise RuntimeError("fit ran fewer than two executions")
        return self._marks[-1] - self._marks[0]


class TorchTrainer:
    """The PyTorch reference, trained the way the study's notebooks do (eager, one optimizer)."""

    def __init__(self, variant, sample_rate, input_rate=None, batch=100, steps=2, device="cpu",
                 amp=False, compile=False):
        from .columns import TORCH_MISSING, torch_installed

        if not torch_installed():
            raise ModuleNotFoundError(TORCH_MISSING)
        import torch
        from .torch_reference import TorchKWS
        from kws_tf.variants import get_variant
        v = get_variant(variant)
        self.torch, self.device, self.amp = torch, torch.device(device), amp
        self.batch, self.steps = batch, steps
        self.model = TorchKWS(v, sample_rate, input_rate=input_rate).to(self.device)
        self.step_model = torch.compile(self.model) if compile else self.model
        self.loss = self.model.loss_fn()
        self.opt = (torch.optim.Adam(self.model.parameters(), v.learning_rate)
                    if v.optimizer == "adam"
                    else torch.optim.SGD(self.model.parameters(), v.learning_rate))
        x, y = random_batch(batch, input_rate or sample_rate)
        self.x = torch.tensor(x, device=self.device)
        self.y = torch.tensor(y, dtype=torch.long, device=self.device)

    def run(self):
        torch = self.torch
        self.model.train()
        t0 = time.perf_counter()
        for _ in range(self.steps):
            self.opt.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                out = self.step_model(self.x)
            loss = self.loss(out.float(), self.y)
            loss.backward()
            self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def peak_rss_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
