"""python -m benchmarks.web_latency: milliseconds per packet in the browser page (LiteRT.js,
WebAssembly) beside LiteRT in Python, on the same machine, same files.

For each streaming file, float32 and int8: the page (``python -m kws_tf.web``'s folder, served
on 127.0.0.1, in headless Debian chromium driven by Playwright) is fed ``--packets`` packets
of noise through ``window.kws.feed``; its per-packet times (``window.kws.timings``: tensors in,
``model.run``, tensors out, as the page pays them on the microphone) are summarised after
10 warm-up packets.  Python: ``TFLiteModel.step`` (ai_edge_litert, ``--threads`` threads,
default 1 as LiteRT.js's non-threaded WebAssembly build) on the same packets, states fed
back by name.  Models: ``--export FOLDER`` (an export with model_stream_*.tflite files), else
the study's gru4 at ``--rates`` with random weights (latency does not depend on the weights)
and int8 calibrated on noise.  Results go to ``benchmarks/results/web-latency-<machine>.json``
(``--json``) with the lscpu model name, the chromium version and the load average.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from kws_tf import cli

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
WARMUP = 10


def random_stream_files(variant: str, rate: int, folder: Path) -> Path:
    """model_stream_float32/int8.tflite (with kws_tf metadata) of ``variant`` at ``rate`` with
    random weights, in ``folder``."""
    from kws_tf.export.metadata import add_metadata, stream_metadata
    from kws_tf.export.stream import calibration_feeds, convert_stream_tflite, tflite_stream_graph
    from kws_tf.streaming import model as sm

    from .streaming_latency import _clips, _model

    model, info = _model(variant, rate)
    _, cal16, _, _ = _clips(model, info, None)
    stream = sm.build_streaming_model(model, 1)
    sinfo = sm.streaming_info(stream)
    unrolled = tflite_stream_graph(model, 1)
    feeds = calibration_feeds(stream, sinfo, cal16, limit=300)
    folder.mkdir(parents=True, exist_ok=True)
    for q, name in (("none", "float32"), ("int8", "int8")):
        content, _ = convert_stream_tflite(unrolled, sinfo, q, feeds if q == "int8" else None)
        meta = stream_metadata(sinfo, info["labels"], info, name)
        (folder / f"model_stream_{name}.tflite").write_bytes(add_metadata(content, meta))
    return folder


def python_ms(path: Path, packets: int, threads: int) -> dict:
    from kws_tf.inference.tflite import TFLiteModel

    runner = TFLiteModel(path, num_threads=threads)
    noise = np.random.default_rng(0).uniform(-0.1, 0.1, (packets, runner.hop)).astype(np.float32)
    state = {"states": runner.zero_states(), "i": 0}

    def step():
        out = runner.step({"audio": noise[state["i"] % packets][None], **state["states"]})
        state["states"] = {n: out[n] for n in state["states"]}
        state["i"] += 1

    times = []
    for _ in range(WARMUP):
        step()
    for _ in range(packets):
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1000)
    return {"median_ms": float(np.median(times)), "mean_ms": float(np.mean(times)),
            "p95_ms": float(np.percentile(times, 95)), "repeats": packets}


def browser_ms(browser, path: Path, packets: int, workdir: Path) -> dict:
    """The page's own per-packet times on ``packets`` packets of noise (after the warm-up)."""
    from kws_tf import web

    folder = workdir / path.stem
    web.build_page(path, folder)
    httpd = web.server(folder, 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    page = browser.new_page()
    try:
        page.goto(f"http://127.0.0.1:{httpd.server_address[1]}/")
        page.wait_for_function("window.kws && (window.kws.meta || window.kws.errors.length)",
                               timeout=120_000)
        isolated = page.evaluate("window.crossOriginIsolated")  # microsecond timer
        errors = page.evaluate("window.kws.errors")
        if errors:
            raise RuntimeError(f"the page failed: {errors}")
        times = page.evaluate("""async (n) => {
            const a = new Float32Array(n * window.kws.meta.hop);
            for (let i = 0; i < a.length; i++) a[i] = 0.2 * Math.random() - 0.1;
            await window.kws.feed(a);
            return window.kws.timings;
        }""", packets + WARMUP)[WARMUP:]
    finally:
        page.close()
        httpd.shutdown()
        httpd.server_close()
    return {"median_ms": float(np.median(times)), "mean_ms": float(np.mean(times)),
            "p95_ms": float(np.percentile(times, 95)), "repeats": len(times),
            "cross_origin_isolated": isolated}


def bench(models: dict, packets: int, threads: int, chromium: str) -> tuple:
    from playwright.sync_api import sync_playwright

    from kws_tf.inference.tflite import read_metadata

    rows = []
    with tempfile.TemporaryDirectory(prefix="web-latency-") as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        version = browser.version
        try:
            for name, folder in models.items():
                for q in ("float32", "int8"):
                    path = Path(folder) / f"model_stream_{q}.tflite"
                    meta = read_metadata(path)
                    base = {"model": name, "quantization": q, "hop_ms": meta["hop_seconds"] * 1000,
                            "model_rate": meta["model_rate"], "size_bytes": path.stat().st_size}
                    rows.append({**base, "runtime": "LiteRT.js WebAssembly (page)",
                                 **browser_ms(browser, path, packets, Path(tmp))})
                    rows.append({**base, "runtime": f"ai_edge_litert Python ({threads} thread)",
                                 **python_ms(path, packets, threads)})
        finally:
            browser.close()
    return rows, version


def _print(rows) -> None:
    print(f"{'model':26s} {'q':8s} {'runtime':36s} {'median ms':>9s} {'mean ms':>8s} "
          f"{'p95 ms':>8s}  per packet of")
    for r in rows:
        print(f"{r['model']:26s} {r['quantization']:8s} {r['runtime']:36s} {r['median_ms']:9.3f} "
              f"{r['mean_ms']:8.3f} {r['p95_ms']:8.3f}  {r['hop_ms']:g} ms")


def main(argv=None) -> int:
    p = cli.ArgumentParser(prog="python -m benchmarks.web_latency",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--export", action="append", default=[], metavar="FOLDER",
                   help="an export folder with model_stream_float32/int8.tflite (repeatable)")
    p.add_argument("--variant", default="gru4", help="random-weight variant without --export")
    p.add_argument("--rates", default="16000,8000", help="its rates without --export")
    p.add_argument("--packets", type=int, default=300, help="timed packets per file")
    p.add_argument("--threads", type=int, default=1, help="Python LiteRT threads (default 1)")
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    p.add_argument("--json", help="results file (default benchmarks/results/"
                                  "web-latency-<machine>.json; 'none' = do not write)")
    args = p.parse_args(argv)
    from kws_tf.platform.machine import environment

    from .common import cpu_peak, machine_tag, write_result

    peak, load_before = cpu_peak(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="web-latency-models-") as tmp:
        models = {Path(f).name: Path(f) for f in args.export}
        if not models:
            for rate in map(int, args.rates.split(",")):
                name = f"{args.variant}-{rate // 1000}k (random weights)"
                models[name] = random_stream_files(args.variant, rate, Path(tmp) / str(rate))
        rows, chromium = bench(models, args.packets, args.threads, args.chromium)
    _print(rows)
    from kws_tf.web import HERE

    lock = json.loads((HERE / "package-lock.json").read_text())
    result = {"command": "python -m benchmarks.web_latency " + " ".join(
        argv if argv is not None else sys.argv[1:]),
        "lscpu_model_name": peak["model_name"], "machine": peak,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S"), "chromium": chromium,
        "litertjs": lock["packages"]["node_modules/@litertjs/core"]["version"],
        "versions": environment(), "rows": rows}
    if args.json != "none":
        write_result(result, Path(args.json) if args.json else
                     RESULTS / f"web-latency-{machine_tag(peak)}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
