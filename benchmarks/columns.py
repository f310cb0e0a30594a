"""The columns of the training benchmark: which framework, environment and trainer options
each one runs, and which PyTorch column each is compared with.  Why each setting is there and
what it measured: benchmarks/README.md."""
from __future__ import annotations

from kws_tf.platform import xla_clusters
from kws_tf.platform.cpu_memory import GLIBC_ENV

# The fit-path settings this benchmark recommends (keras-tf-opt), see README.md.
OPT = {"fused": True, "jit_compile": True}
# --mixed-precision as the fit path runs it on a CPU (FitConfig.speed_defaults): the fast
# build, XLA fusing the element-wise ops and oneDNN running the convolutions (CLUSTERS env).
OPT_BF16 = {"fused": True, "jit_compile": False, "mixed_precision": "mixed_bfloat16"}
# The float32 settings plus the bf16 policy: the whole step compiled by XLA, whose CPU
# convolutions run through float32; shows what leaving the convolutions to oneDNN gains.
JIT_BF16 = {**OPT, "mixed_precision": "mixed_bfloat16"}
# The plain build without XLA under the bf16 policy (TF's oneDNN bf16 kernels): shows what the
# fused build and XLA add in bf16.
PLAIN_BF16 = {"fused": False, "jit_compile": False, "mixed_precision": "mixed_bfloat16"}
TF = {"KERAS_BACKEND": "tensorflow"}
# kws_tf.platform.cpu_memory.reuse_cpu_memory(), which the fit path calls by default.
REUSE = {**TF, "KWS_REUSE_CPU_MEMORY": "1"}
# kws_tf.platform.xla_clusters.request(), which the training CLIs call for --mixed-precision.
CLUSTERS = {**REUSE, "TF_XLA_FLAGS": " ".join(xla_clusters.FLAGS)}
# The same glibc half of it for PyTorch (which has no BFC switch): never serve big blocks with
# mmap, never trim.  Not PyTorch's default; shown so the comparison is fair both ways.
MALLOC_ENV = GLIBC_ENV

# What a column that needs PyTorch says where PyTorch is missing (the README's install leaves it
# out: it is the ``torch`` extra).
TORCH_MISSING = 'needs PyTorch, which is not installed: pip install -e ".[torch]"'


def needs_torch(column) -> bool:
    """A column ``(framework, env, options)`` that runs PyTorch or Keras on the torch backend."""
    framework, env, _ = column
    return framework == "torch" or env.get("KERAS_BACKEND") == "torch"


def torch_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


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
    "tf fast": ("keras", TF, {"fused": True}),
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
    # Allocation: block 1's large activations are malloc'd every step, and glibc serves blocks
    # that big with fresh mmap pages, so every step page-faults zeroed memory
    # (kws_tf.platform.cpu_memory; the sizes are in benchmarks/README.md).
    "tf fast+jit bfc": ("keras", {**TF, "TF_CPU_ALLOCATOR_USE_BFC": "true"}, OPT),
    "tf fast+jit malloc": ("keras", {**TF, **MALLOC_ENV}, OPT),
    "tf fast+jit reuse-mem": ("keras", REUSE, OPT),
    "tf plain reuse-mem": ("keras", REUSE, {}),
    "torch": ("torch", {}, {}),
    "torch malloc": ("torch", MALLOC_ENV, {}),
    "torch malloc bf16": ("torch", MALLOC_ENV, {"amp": True}),
}

REFS = ("torch-malloc", "torch malloc", "torch")  # PyTorch given our allocator setting first
BF16_REFS = ("torch-malloc-bf16", "torch malloc bf16")


def is_bf16(opts: dict) -> bool:
    """A column that computes in bfloat16 (Keras mixed_bfloat16 or torch.autocast bf16)."""
    return opts.get("mixed_precision") == "mixed_bfloat16" or bool(opts.get("amp"))


def reference_column(rows, column_opts):
    """The PyTorch column a row is compared with: with our allocator setting where measured,
    and in bf16 (autocast) for bf16 columns where that was measured."""
    present = {r["column"] for r in rows if "clips_per_s" in r}
    pool = (BF16_REFS + REFS) if is_bf16(column_opts) else REFS
    return next((c for c in pool if c in present), None)


def choose(quick: bool, ablations: bool, variants: str, rates: str, steps, names=None):
    """``(configs, steps per round, columns)`` of a run: --quick, the default, --ablations,
    then --columns ``names`` (a comma list) on top."""
    if quick:
        # keras-torch is the slowest column and not the comparison --quick is for; add it
        # back with --columns keras-tf,keras-tf-opt,torch,keras-torch.
        configs, steps = [("gru4", 16000)], steps or 1
        columns = {k: COLUMNS[k] for k in HEADLINE}
    else:
        configs = [(v, int(r)) for v in variants.split(",") for r in rates.split(",")]
        steps = steps or 2
        columns = {k: COLUMNS[k] for k in ("keras-tf", *HEADLINE, "keras-torch")}
    if ablations:
        configs, columns = [("gru4", 16000)], dict(ABLATIONS)
    if names:
        # Any headline or ablation column may be named (ablation names win on a clash).
        pool = {**COLUMNS, **ABLATIONS} if ablations else {**ABLATIONS, **COLUMNS}
        columns = {k: pool[k] for k in names.split(",")}
    return configs, steps, columns
