"""A benchmark worker: one framework per process, commands as JSON lines on stdin.

run.py starts one worker per framework (the Keras backend is fixed per process) and sends
the same command to each in turn, so rounds alternate A B C A B C on the same CPU and idle
workers block on stdin instead of competing for cores.  Replies are "@@" + JSON on stdout.
"""
from __future__ import annotations

import json
import os
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    framework = sys.argv[1]  # "keras" (backend from KERAS_BACKEND) | "torch"
    if os.environ.get("KWS_REUSE_CPU_MEMORY") == "1":  # the fit path's default, before any tensor
        from kws_tf.platform.cpu_memory import reuse_cpu_memory
        reuse_cpu_memory()
    if framework == "keras" and os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        import tensorflow as tf
        inter = os.environ.get("KWS_INTER_OP_THREADS")
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(int(inter))
        intra = os.environ.get("KWS_INTRA_OP_THREADS")
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(int(intra))
    from benchmarks import common
    trainers = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            key = json.dumps(cmd["config"], sort_keys=True)
            new = key not in trainers
            if new:
                cfg = dict(cmd["config"])
                opts = cfg.pop("options", {})
                if framework == "torch":
                    trainers[key] = common.TorchTrainer(**cfg, **opts)
                else:
                    trainers[key] = common.KerasTrainer(**cfg, **opts)
                for _ in range(cmd.get("warmup", 1)):
                    trainers[key].run()
            secs = trainers[key].run()
            t = trainers[key]
            reply = {"ok": True, "seconds": secs, "clips_per_s": t.batch * t.steps / secs,
                     "peak_rss_mb": common.peak_rss_mb()}
        except Exception as e:  # report, keep serving
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}",
                     "trace": traceback.format_exc()[-2000:]}
        sys.stdout.write("@@" + json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
