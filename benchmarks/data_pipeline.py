"""Throughput of kws_tf.data.make_dataset in clips/s, at 16 and 8 kHz, on real clips.

    python -m benchmarks.data_pipeline [--root PATH] [--split training] [--batch-size 100]

For each rate, over the whole split (shuffled, batched, prefetched, as training reads it):
  setup   load_splits + the header check of every clip (make_dataset's own cost)
  cold    first pass: read + tf.audio.decode_wav + pad/crop + fill the int16 memory cache,
          with the clips first evicted from the OS page cache (posix_fadvise DONTNEED), so
          it includes the disk
  cached  later passes from the in-memory cache (median of --repeats), i.e. every epoch
          after the first; 8 kHz includes the per-batch Resample(16000, 8000)
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from benchmarks.common import TRAIN_SPLIT_CLIPS, lscpu
from kws_tf import cli

SUBSET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech_commands_subset"


def evict(root: Path, files) -> bool:
    """Drop the clips from the OS page cache (no root needed for clean pages)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for rel in files:
        fd = os.open(root / rel, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def drain(ds) -> tuple:
    n, t0 = 0, time.perf_counter()
    for x, _ in ds:
        n += int(x.shape[0])
    return n, time.perf_counter() - t0


def main(argv=None) -> None:
    p = cli.ArgumentParser(prog="python -m benchmarks.data_pipeline", description=cli.first_paragraph(__doc__))
    p.add_argument("--root", default=str(SUBSET), help="Speech Commands folder (default: the shared subset)")
    p.add_argument("--split", default="training")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5, help="cached passes (median reported)")
    args = p.parse_args(argv)

    import tensorflow as tf

    from kws_tf import data as kdata
    from kws_tf.data.splits import split_name

    root = Path(args.root)
    info = lscpu()
    print(f"CPU: {info.get('Model name', '?')} ({os.cpu_count()} logical CPUs); "
          f"TensorFlow {tf.__version__}")
    print(f"data: {root} [{args.split}], batch {args.batch_size}")
    print(f"{'rate':>6} {'clips':>6} {'setup s':>8} {'cold clips/s':>13} {'cached clips/s':>15}"
          f" {'epoch of 84,843 cached':>23}")
    for rate in (16000, 8000):
        files = kdata.load_splits(root)[1][split_name(args.split)]
        evicted = evict(root, files)
        t0 = time.perf_counter()
        ds = kdata.make_dataset(root, args.split, sample_rate=rate, batch_size=args.batch_size)
        setup = time.perf_counter() - t0
        n, cold = drain(ds)
        cached = statistics.median(drain(ds)[1] for _ in range(args.repeats))
        print(f"{rate:>6} {n:>6} {setup:>8.2f} {n / cold:>13,.0f} {n / cached:>15,.0f}"
              f" {TRAIN_SPLIT_CLIPS / (n / cached):>21.1f} s")
    if not evicted:
        print("note: no posix_fadvise here; 'cold' read files from the OS cache as found")


if __name__ == "__main__":
    main()
