"""Where a streaming packet's time goes (``python -m benchmarks.streaming_latency --stages``):
the float32 streaming model cut after each stage, each cut converted and timed alone."""
from __future__ import annotations

from .common import latency_ms
from .streaming_latency import _model, longest_hop_strides


def stages(variant, rate, path, hop_strides, repeats, threads, rounds: int = 5) -> list:
    """Where a float32 packet's time goes: the streaming model cut after each stage
    (resampler, blocks, the new steps' GRU projection, the recurrence, the classifier),
    each cut converted alone and timed; a stage's cost is the difference of the cumulative
    times (the best median of ``rounds`` interleaved rounds: other jobs' noise comes and
    goes).  The cuts return the stage's output only, not the states."""
    import keras

    from kws_tf.export.stream import tflite_stream_graph
    from kws_tf.streaming import model as sm
    from kws_tf.inference.tflite import TFLiteModel

    model, _ = _model(variant, rate, path)
    if isinstance(hop_strides, float):
        hop_strides = longest_hop_strides(model, hop_strides)
    stream = tflite_stream_graph(model, hop_strides)
    info = sm.streaming_info(stream)
    names = [n for n in ("resample", "block1", "block2", "block3", "block4", "block5",
                         "gru_inputs", "gru", "probabilities")
             if any(layer.name == n for layer in stream.layers)]
    runners = {}
    for n in names:
        out = stream.get_layer(n).output
        cut = keras.Model(stream.inputs, out[0] if isinstance(out, (list, tuple)) else out)
        runners[n] = TFLiteModel(_cut_tflite(cut, info), num_threads=threads).interpreter
    best = {n: float("inf") for n in names}
    for _ in range(rounds):
        for n, it in runners.items():
            best[n] = min(best[n], latency_ms(it.invoke, repeats)["median_ms"])
    rows, prev = [], 0.0
    for n in names:
        rows.append({"variant": variant, "sample_rate": rate, "hop_strides": hop_strides,
                     "stage": n, "cumulative_ms": best[n], "stage_ms": best[n] - prev})
        prev = best[n]
    return rows


def _cut_tflite(cut, info) -> bytes:
    import tempfile

    import keras
    import tensorflow as tf

    from kws_tf.export.tflite_convert import _convert

    names = ["audio", *sorted(info["states"])]
    specs = [tf.TensorSpec((1, int(info["hop"])), tf.float32, name="audio")] + [
        tf.TensorSpec((1, *shape), tf.float32, name=n) for n, shape in sorted(info["states"].items())]

    def serve(*tensors):
        return {"y": cut(dict(zip(names, tensors)), training=False)}

    with tempfile.TemporaryDirectory(prefix="kws-stage-") as tmp:
        archive = keras.export.ExportArchive()
        archive.track(cut)
        archive.add_endpoint("serving_default", serve, input_signature=specs)
        archive.write_out(tmp, verbose=False)
        return _convert(tmp, "none", None, signature="serving_default")[0]
