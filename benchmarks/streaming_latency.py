"""python -m benchmarks.streaming_latency: what streaming costs next to the window model.

For gru4 (``--variants``) at 16 and 8 kHz (``--rates``): the streaming TFLite float32 and
int8 files at ``--hop-strides`` (default 1; ``--hop-seconds 0.25``: the longest hop within
0.25 s at each rate) are timed per packet, states fed back by name as
a device loop does, and the window TFLite float32 and int8 files per 1 s window, all on one
thread (``--threads``).  Each row: median and p95 ms per call, CPU ms and multiply-accumulates
per second of audio (the window model at predict's 0.25 s hop: 4 windows per second),
real-time factor (CPU seconds per second of audio), decisions per second, size on disk.

Models: ``--model RATE=PATH.keras`` (a trained one), else the variant with random weights
(latency does not depend on the weights); int8 is calibrated on real clips with ``--data``,
else on noise.  ``--int8-choices MODEL.keras --data ROOT`` instead compares the int8 schemes
(accuracy on the validation and test splits, size, latency) for the window and streaming
files.  Results go to ``benchmarks/results/streaming-latency-<machine>.json`` (``--json``)
with the lscpu model name and the load average before and after (timings taken while other
jobs run are noisy: the load says how noisy).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from .common import latency_ms
from kws_tf import cli

RESULTS = Path(__file__).resolve().parent / "results"
WINDOW_HOP_SECONDS = 0.25


def _model(variant: str, rate: int, path=None):
    import keras

    from kws_tf import artifacts, build_model

    if path:
        model, info = artifacts.load_model(path, compile=False)
        return model, dict(info)
    keras.utils.set_random_seed(0)
    model = build_model(variant, rate)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # BatchNorm statistics that do something (random, not trivial)
        if layer.name.endswith("_bn"):
            c = layer.moving_mean.shape[0]
            layer.set_weights([rng.uniform(0.5, 2.0, c), rng.normal(0, 0.3, c),
                               rng.normal(0, 0.05, c), rng.uniform(0.02, 0.2, c)])
    labels = [f"w{i}" for i in range(model.output_shape[-1])]
    return model, {"labels": labels, "variant": variant, "sample_rate": rate}


def _clips(model, info, data_root, n=100):
    """(window calibration, 16 kHz calibration, one window clip, a 16 kHz stream)."""
    rate = int(model.input_shape[-1])
    if data_root:
        from kws_tf.export import load_export_data

        d = load_export_data(data_root, _known_labels(data_root, info["labels"]), rate,
                             calibration_clips=n, eval_clips=20, streaming=True)
        cal16, eval16 = d.stream_clips(rate)
        return d.calibration, cal16, d.audio[:1], eval16.reshape(-1)
    rng = np.random.default_rng(0)
    cal16 = rng.uniform(-0.3, 0.3, (n // 5, 16000)).astype(np.float32)
    from kws_tf.data.audio import resample

    return resample(cal16, 16000, rate), cal16, resample(cal16[:1], 16000, rate), cal16.reshape(-1)


def _known_labels(root, labels):
    """Random-weight models have w0...: calibrate on the dataset's words instead."""
    words = sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("_"))
    return labels if set(labels) & set(words) else words


def bench(variant, rate, path, data_root, hop_strides, repeats, threads, schemes) -> list:
    from kws_tf.export import convert_tflite
    from kws_tf.export.stream import calibration_feeds, convert_stream_tflite, tflite_stream_graph
    from kws_tf.streaming import model as sm
    from kws_tf.inference.tflite import TFLiteModel

    from kws_tf.streaming.geometry import streaming_cost

    model, info = _model(variant, rate, path)
    if isinstance(hop_strides, float):  # seconds: the longest hop within them
        hop_strides = longest_hop_strides(model, hop_strides)
    cal, cal16, clip, audio16 = _clips(model, info, data_root)
    stream = sm.build_streaming_model(model, hop_strides)
    sinfo = sm.streaming_info(stream)
    unrolled = tflite_stream_graph(model, hop_strides)
    feeds = calibration_feeds(stream, sinfo, cal16, limit=300)
    cost = streaming_cost(model, hop_strides)
    hop = sinfo["hop"]
    packets = audio16[:len(audio16) // hop * hop].reshape(-1, hop)
    base = {"variant": variant, "sample_rate": rate, "trained": bool(path), "threads": threads}
    rows = []
    for q, scheme in [("none", None), *[("int8", s) for s in schemes]]:
        content, _ = convert_tflite(model, q, cal, int8_scheme=scheme)
        lite = TFLiteModel(content, num_threads=threads)
        t = latency_ms(lambda: lite.probabilities(clip), repeats)
        rows.append({**base, "model": "window", "quantization": _qname(q, scheme),
                     "size_bytes": len(content), **t, "seconds_per_call": 1.0,
                     "calls_per_second": 1 / WINDOW_HOP_SECONDS,
                     "macs_per_call": cost["macs_per_window"],
                     "macs_per_second": cost["window_per_second"]})
        content, _ = convert_stream_tflite(unrolled, sinfo, q, feeds, int8_scheme=scheme)
        runner = TFLiteModel(content, num_threads=threads)
        state = {"states": runner.zero_states(), "i": 0}

        def step():
            p = packets[state["i"] % len(packets)]
            out = runner.step({"audio": p[None], **state["states"]})
            state["states"] = {n: out[n] for n in state["states"]}
            state["i"] += 1

        t = latency_ms(step, repeats * 4)
        rows.append({**base, "model": "stream", "hop_strides": hop_strides, "hop": hop,
                     "quantization": _qname(q, scheme), "size_bytes": len(content), **t,
                     "seconds_per_call": hop / 16000, "calls_per_second": 16000 / hop,
                     "macs_per_call": cost["macs_per_packet"],
                     "macs_per_second": cost["stream_per_second"], **_micro(content)})
    for r in rows:
        r["cpu_ms_per_second"] = r["median_ms"] * r["calls_per_second"]
        r["real_time_factor"] = r["cpu_ms_per_second"] / 1000
    return rows + _targets(rows, variant, rate)


def _micro(content) -> dict:
    """The TFLite Micro arena the file needs (with the ``micro`` extra installed)."""
    from kws_tf.export import micro

    return {"micro_arena_bytes": micro.arena_bytes(content)} if micro.available() else {}


def longest_hop_strides(model, seconds: float) -> int:
    """The most strides whose packet lasts no longer than ``seconds`` (at least one)."""
    from kws_tf.streaming.geometry import streaming_geometry

    g = streaming_geometry(model)
    return max(int(seconds * g.model_rate + 1e-9) // g.stride, 1)


def _qname(q, scheme):
    return "float32" if q == "none" else "int8" if scheme is None else f"int8_{scheme}"


def _targets(rows, variant, rate) -> list:
    """Each stream file vs the window int8 file (the target), window float32 and the window
    file of its own scheme, per second of audio; the 1 ms packet target."""
    out = []
    by = {(r["model"], r["quantization"]): r for r in rows}
    for (kind, q), r in by.items():
        if kind != "stream":
            continue
        # the target is against the int8 window file, for every streaming file
        for wq in dict.fromkeys(("float32", "int8", q)):
            w = by.get(("window", wq))
            if w is None:
                continue
            ratio = r["cpu_ms_per_second"] / w["cpu_ms_per_second"]
            out.append({"check": f"stream {q} / window {wq} CPU per second of audio",
                        "variant": variant, "sample_rate": rate, "ratio": round(ratio, 3),
                        "decisions_ratio": round(r["calls_per_second"] / w["calls_per_second"], 2),
                        "target": "<= 0.5", "met": bool(ratio <= 0.5)})
        if rate == 8000:
            out.append({"check": f"stream {q} ms per packet", "variant": variant,
                        "sample_rate": rate, "median_ms": round(r["median_ms"], 4),
                        "target": "<= 1 ms", "met": bool(r["median_ms"] <= 1.0)})
    return out


# ----------------------------------------------------------------------------- int8 choices
def int8_choices(path, data_root, repeats: int, threads: int) -> list:
    """Accuracy (validation, testing), size and 1-thread latency of each quantization choice
    for the window and the streaming files of one trained model."""
    from kws_tf import artifacts
    from kws_tf.export import convert_tflite, load_export_data
    from kws_tf.export.clips import NOISE_SHARE
    from kws_tf.export.stream import (calibration_feeds, convert_stream_tflite, keras_stream,
                                      stream_packets, tflite_stream_graph)
    from kws_tf.streaming import model as sm
    from kws_tf.inference.tflite import TFLiteModel

    model, info = artifacts.load_model(path, compile=False)
    rate = int(model.input_shape[-1])
    splits = {s: load_export_data(data_root, info["labels"], rate, s, 200, 0, streaming=True)
              for s in ("validation", "testing")}
    cal, cal16 = splits["validation"].calibration, splits["validation"].stream_clips(rate)[0]
    words_only = int(round(len(cal) * (1 - NOISE_SHARE)))  # the noise clips come last
    stream = sm.build_streaming_model(model, 1)
    sinfo = sm.streaming_info(stream)
    unrolled = tflite_stream_graph(model, 1)
    feeds = {"words+noise": calibration_feeds(stream, sinfo, cal16),
             "words": calibration_feeds(stream, sinfo, cal16[:words_only])}
    choices = [("float32", "none", None, "words"), ("dynamic", "dynamic", None, "words"),
               ("int8 full, words only", "int8", "full", "words"),
               ("int8 float_input, words only", "int8", "float_input", "words"),
               ("int8 full, words+noise", "int8", "full", "words+noise"),
               ("int8 float_gru, words+noise", "int8", "float_gru", "words+noise"),
               ("int8 float_input, words+noise", "int8", "float_input", "words+noise"),
               ("int8 float_early, words+noise", "int8", "float_early", "words+noise"),
               ("int16x8, words+noise", "int16x8", None, "words+noise")]
    rows = []
    for name, q, scheme, calib in choices:
        c = cal if calib == "words+noise" else cal[:words_only]
        content, _ = convert_tflite(model, q, c, int8_scheme=scheme)
        lite = TFLiteModel(content, num_threads=threads)
        row = {"model": "window", "choice": name, "size_bytes": len(content),
               **latency_ms(lambda: lite.probabilities(splits["testing"].audio[:1]), repeats)}
        for s, d in splits.items():
            row[f"{s}_accuracy"] = float((lite.probabilities(d.audio).argmax(-1) == d.labels).mean())
        rows.append(row)
        content, _ = convert_stream_tflite(unrolled, sinfo, q, feeds[calib], int8_scheme=scheme)
        runner = TFLiteModel(content, num_threads=threads)
        row = {"model": "stream", "choice": name, "size_bytes": len(content)}
        for s, d in splits.items():
            packets = stream_packets(d.stream_clips(rate)[1], sinfo)
            probs = np.stack([runner.run(p)[-1] for p in packets])
            row[f"{s}_accuracy"] = float((probs.argmax(-1) == d.labels).mean())
        feed = {"audio": packets[0, :1], **runner.zero_states()}
        row.update(latency_ms(lambda: runner.step(feed), repeats * 4))
        rows.append(row)
    for s, d in splits.items():  # the Keras stream: what the float32 file must equal
        ref = keras_stream(stream, sinfo, stream_packets(d.stream_clips(rate)[1], sinfo))
        rows.append({"model": "keras_stream", "choice": "keras",
                     f"{s}_accuracy": float((ref[:, -1].argmax(-1) == d.labels).mean())})
    return _drops(rows)


def _drops(rows) -> list:
    for kind in ("window", "stream"):
        ref = next(r for r in rows if r["model"] == kind and r["choice"] == "float32")
        for r in rows:
            if r["model"] == kind:
                for s in ("validation", "testing"):
                    r[f"{s}_drop_points"] = round(100 * (ref[f"{s}_accuracy"] -
                                                         r[f"{s}_accuracy"]), 3)
    return rows


# ----------------------------------------------------------------------------- main
def _print(rows) -> None:
    for r in rows:
        if "stage" in r:
            print(f"  {r['variant']} {r['sample_rate']:5d} hop {r['hop_strides']} {r['stage']:14s} "
                  f"{r['stage_ms']:+.4f} ms (cumulative {r['cumulative_ms']:.4f})")
        elif "check" in r:
            print(f"  {'MET ' if r['met'] else 'MISS'} {r['check']} ({r['variant']} "
                  f"{r['sample_rate']} Hz): " + ", ".join(
                      f"{k} {r[k]}" for k in ("ratio", "decisions_ratio", "median_ms") if k in r))
        elif "choice" in r:
            print(f"  {r['model']:12s} {r['choice']:28s} " + "  ".join(
                f"{k} {r[k]:.4g}" for k in ("validation_accuracy", "validation_drop_points",
                                            "testing_accuracy", "testing_drop_points",
                                            "median_ms", "size_bytes") if k in r))
        else:
            print(f"  {r['variant']} {r['sample_rate']:5d} {r['model']:6s} "
                  f"{r['quantization']:15s} median {r['median_ms']:.3f} ms p95 "
                  f"{r['p95_ms']:.3f} ms  {r['cpu_ms_per_second']:7.2f} CPU ms/s  "
                  f"{r['macs_per_second'] / 1e6:7.1f} MMAC/s  RTF {r['real_time_factor']:.4f}  "
                  f"{r['size_bytes'] / 1e6:.2f} MB" + (f"  TFLM arena {r['micro_arena_bytes'] / 1e3:.0f} kB"
                                                   if "micro_arena_bytes" in r else ""))


def _measure(args) -> tuple:
    """(rows, kind) of what the flags ask for."""
    from .stream_stages import stages

    if args.int8_choices:
        if not args.data:
            raise SystemExit("--int8-choices needs --data (accuracy on real clips)")
        rows, kind = int8_choices(args.int8_choices, args.data, args.repeats, args.threads), \
            "int8-choices"
    elif args.stages:
        models, rows, kind = dict(m.split("=", 1) for m in args.model), [], "stages"
        for v in args.variants.split(","):
            for rate in map(int, args.rates.split(",")):
                rows += stages(v, rate, models.get(str(rate)),
                               args.hop_seconds or args.hop_strides, args.repeats, args.threads)
    else:
        models = dict(m.split("=", 1) for m in args.model)
        rows, kind = [], "latency"
        for v in args.variants.split(","):
            for rate in map(int, args.rates.split(",")):
                hop = args.hop_seconds if args.hop_seconds else args.hop_strides
                rows += bench(v, rate, models.get(str(rate)), args.data, hop,
                              args.repeats, args.threads,
                              [None if s == "default" else s for s in args.int8_schemes.split(",")])
    return rows, kind


def main(argv=None) -> int:
    p = cli.ArgumentParser(prog="python -m benchmarks.streaming_latency",
                           description=cli.first_paragraph(__doc__))
    p.add_argument("--variants", default="gru4")
    p.add_argument("--rates", default="16000,8000")
    p.add_argument("--model", action="append", default=[], help="RATE=PATH.keras (trained)")
    p.add_argument("--data", help="dataset folder: calibrate int8 on real clips")
    p.add_argument("--hop-strides", type=int, default=1)
    p.add_argument("--hop-seconds", type=float,
                   help="instead of --hop-strides: the longest hop within this many seconds "
                        "at each rate (0.25: 5 strides at 16 kHz, 2 at 8 kHz for gru4)")
    p.add_argument("--int8-schemes", default="default,full",
                   help="comma-separated int8 schemes: default (the export's: float_input "
                        "for window and streaming files), float_input, "
                        "float_early, full, float_gru")
    p.add_argument("--int8-choices", metavar="MODEL", help="compare quantization choices of "
                   "this trained model.keras (needs --data)")
    p.add_argument("--stages", action="store_true", help="instead: where a float32 packet's "
                   "time goes, stage by stage (at --hop-strides / --hop-seconds)")
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="results file (default benchmarks/results/"
                                  "streaming-latency-<machine>.json; 'none' = do not write)")
    args = p.parse_args(argv)
    from kws_tf.platform.machine import environment

    from .common import cpu_peak, machine_tag, write_result

    peak, load_before = cpu_peak(), os.getloadavg()
    rows, kind = _measure(args)
    _print(rows)
    result = {"command": "python -m benchmarks.streaming_latency " + " ".join(
        argv if argv is not None else sys.argv[1:]), "kind": kind,
        "lscpu_model_name": peak["model_name"], "machine": peak,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": environment(), "rows": rows}
    if args.json != "none":
        suffix = {"int8-choices": "-int8-choices", "stages": "-stages"}.get(kind, "")
        write_result(result, Path(args.json) if args.json else RESULTS / (
            f"streaming-latency-{machine_tag(peak)}{suffix}.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
