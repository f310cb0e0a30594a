"""kws_tf.build_streaming_model: packet by packet, the scores of the window model's windows.

On a real 20 s recording (20 subset clips end to end), every variant at 16 and 8 kHz and hop
1 and 3 strides: the streaming probabilities equal the window model's on the windows that end
at the packet boundaries, to 1e-5, from the first packet on (zero states = silence before the
recording).  The models are untrained but not trivial: random BatchNorm statistics and conv
biases (so a block's output on silence is far from zero and the silence-relative states
matter) and a sharpened classifier (so the probabilities move a lot between windows and 1e-5
is a real bound: the same windows one sample off differ by far more).
"""
import math

import keras
import numpy as np
import pytest

from conftest import busy_batchnorm
from kws_tf import build_streaming_model
from kws_tf.metrics import softmax
from kws_tf.streaming.geometry import (STREAM_RATE, default_hop_strides, streaming_cost,
                                              streaming_geometry)
from kws_tf.streaming.model import streaming_info, zero_states
from kws_tf.layers.resample import Resample
from kws_tf.models import build_model
from kws_tf.variants import VARIANTS

TOL = 1e-5
CLASSES = 12
FIRST = 40  # packets compared from the start of the recording
LAST = 5  # and at its end
# cases compared on every packet of the recording; the others on the first FIRST and last LAST
EVERY_PACKET = {("gru4", 16000, 1), ("gru4", 8000, 3), ("gru1", 8000, 1), ("gru3", 8000, 3)}


@pytest.fixture(scope="module")
def recording(subset_root):
    """20 s of real speech at 16 kHz: one clip of each of 20 words, end to end."""
    from kws_tf.data import read_wav
    from kws_tf.data.audio import fix_length

    words = sorted(p.name for p in subset_root.iterdir()
                   if p.is_dir() and not p.name.startswith("_"))[:20]
    clips = [fix_length(read_wav(sorted((subset_root / w).glob("*.wav"))[0])[0], 16000)
             for w in words]
    return np.concatenate(clips).astype(np.float32)


def _model(variant, rate, seed=0):
    """An untrained window model whose BatchNorm does something (see the module docstring)."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    return busy_batchnorm(build_model(variant, rate, CLASSES), rng, sharpen=4, conv_bias_sd=0.05)


def _run(stream, audio, starts, packets):
    """Probabilities of ``packets`` packets from each 16 kHz sample in ``starts``, as one batch
    of streams that all begin with zero states: (len(starts), packets, classes)."""
    info = streaming_info(stream)
    hop = info["hop"]
    states = zero_states(info, len(starts))
    audio = np.pad(audio, (0, packets * hop))  # a stream that runs past the end: not compared
    out = []
    for k in range(packets):
        chunk = np.stack([audio[s + k * hop:s + (k + 1) * hop] for s in starts])
        result = stream.predict_on_batch({"audio": chunk, **states})
        states = {name: result[name] for name in states}
        out.append(result["probabilities"])
    return np.stack(out, axis=1)


def _reference(model, audio, info):
    """The window model's audio at its own rate with 1 s+ of silence before it: 16 kHz as is;
    8 kHz resampled once as a whole (the silence is what zero states mean: before the
    recording the 16 kHz stream was zero, and the sinc filter rings back from its start)."""
    rate, lead = info["model_rate"], 2 * STREAM_RATE
    padded = np.concatenate([np.zeros(lead, np.float32), audio])
    if rate != STREAM_RATE:
        padded = np.asarray(Resample(STREAM_RATE, rate)(padded[None]))[0]
    return padded, lead * rate // STREAM_RATE


def _windows(signal, offset, info, packets, shift=0):
    """The windows that end at the ends of packets ``packets`` (1 = the first), at the model
    rate: the window ends ``delay`` model samples before its packet (0 at 16 kHz)."""
    rate = info["model_rate"]
    ends = [offset + k * info["hop_model_rate"] - info["delay"] - shift for k in packets]
    return np.stack([signal[e - rate:e] for e in ends])


def _check(variant, rate, hop_strides, audio, every_packet=False):
    model = _model(variant, rate)
    stream = build_streaming_model(model, hop_strides)
    info = streaming_info(stream)
    total = len(audio) // info["hop"]
    # A stream started with zero states anywhere is exact once a whole window has passed
    # (every state lies within the last second), so the recording's last packets are checked
    # by a second stream started a window and a packet before them, batched with the first.
    warm = math.ceil(rate / info["hop_model_rate"]) + 1
    first = total if every_packet else min(FIRST, total)
    tail_start = total - LAST - warm
    steps = max(first, warm + LAST)
    probs = _run(stream, audio, [0, tail_start * info["hop"]], steps)
    got = np.concatenate([probs[0, :first], probs[1, warm:warm + LAST]])
    compared = list(range(1, first + 1)) + list(range(tail_start + warm + 1, total + 1))
    signal, offset = _reference(model, audio, info)
    want = softmax(model.predict_on_batch(_windows(signal, offset, info, compared)))
    err = np.abs(got - want).max()
    assert err <= TOL, (variant, rate, hop_strides, err)
    # 1e-5 is tight: the probabilities move over the recording, and the windows one model
    # sample earlier differ by more than ten times that
    spread = list(range(1, total + 1, max(total // 40, 1)))
    spread = softmax(model.predict_on_batch(_windows(signal, offset, info, spread)))
    assert np.ptp(spread, axis=0).max() > 100 * TOL  # a random gru3 leans on one label
    off = softmax(model.predict_on_batch(_windows(signal, offset, info, compared, shift=1)))
    assert np.abs(got - off).max() > 10 * TOL  # gru6 (two blocks) moves least: ~5e-4
    if rate != STREAM_RATE:
        # the recording resampled on its own (zeros before it, no silence resampled) is the
        # same signal from its first sample on: the two readings differ only in the 7
        # resampled samples before the recording, which the sinc filter rings back into
        alone = np.asarray(Resample(STREAM_RATE, rate)(audio[None]))[0]
        np.testing.assert_allclose(signal[offset:offset + len(alone)], alone, atol=1e-6)
        assert np.abs(signal[offset - 7:offset]).max() > 0
        assert np.abs(signal[:offset - 7]).max() == 0
    return err


def test_streaming_model_exact_on_a_real_recording_fast(recording):
    """The unmarked sample of the slow test below: gru4 at 16 kHz, one stride per packet."""
    _check("gru4", 16000, 1, recording)


@pytest.mark.slow
@pytest.mark.parametrize("hop_strides", [1, 3])
@pytest.mark.parametrize("rate", [16000, 8000])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_streaming_model_exact_every_variant(recording, variant, rate, hop_strides):
    _check(variant, rate, hop_strides, recording,
           every_packet=(variant, rate, hop_strides) in EVERY_PACKET)


def test_zero_states_are_silence():
    """Silence in, silence's scores out from the first packet, and the states stay zero."""
    model = _model("gru3", 8000, seed=1)
    stream = build_streaming_model(model, 2)
    info = streaming_info(stream)
    states = zero_states(info)
    want = softmax(model.predict_on_batch(np.zeros((1, 8000), np.float32)))
    for _ in range(3):
        out = stream.predict_on_batch({"audio": np.zeros((1, info["hop"]), np.float32), **states})
        states = {name: out[name] for name in states}
        np.testing.assert_allclose(out["probabilities"], want, atol=TOL)
        # zero up to float32 rounding of activations minus their silence level (3.8e-6 seen
        # under ONEDNN_MAX_CPU_ISA=AVX2; the activations themselves are of order 1)
        assert max(np.abs(s).max() for s in states.values()) < 1e-4


def test_geometry_hops_states_and_defaults():
    """The issue's numbers: hops, GRU steps, state shapes, delay; and the default hops."""
    expect = {"gru1": (768, 20, 9), "gru3": (192, 82, 40), "gru6": (48, 331, 164)}
    for variant, (stride, n16, n8) in expect.items():
        for rate, n in ((16000, n16), (8000, n8)):
            g = streaming_geometry(build_model(variant, rate, CLASSES))
            assert (g.stride, g.gru_steps) == (stride, n)
            assert g.delay == (0 if rate == 16000 else 4)
            assert g.packet(1) == stride * 16000 // rate
    model = build_model("gru4", 8000, CLASSES)
    stream = build_streaming_model(model)
    info = streaming_info(stream)
    assert info["hop"] == 1536 and info["hop_model_rate"] == 768 and info["hop_strides"] == 1
    assert info["states"] == {"state_resample": [27], "state_block1": [77, 1],
                              "state_block2": [4, 128], "state_block3": [4, 128],
                              "state_block4": [4, 256], "state_gru": [9, 768]}
    # state_gru: the input projections of the 9 GRU steps (3 gates x 256 units)
    assert [t.name for t in stream.inputs] == ["audio", *sorted(info["states"])]
    assert list(stream.output) == ["probabilities", *sorted(info["states"])]
    for variant in VARIANTS:
        for rate in (16000, 8000):
            m = build_model(variant, rate, CLASSES)
            h = default_hop_strides(m)
            cost = streaming_cost(m, h)
            assert cost["stream_per_second"] <= cost["window_per_second"]
            assert cost["macs_per_packet"] < cost["macs_per_window"]
            if len(VARIANTS[variant].conv_channels) == 4:
                assert h == 1


def test_save_and_load_keep_the_function(tmp_path):
    from kws_tf import artifacts
    from kws_tf.streaming import model as streaming_model

    model = _model("gru6", 8000, seed=2)
    stream = build_streaming_model(model, 4)
    path = streaming_model.save(stream, tmp_path / "model_stream.keras", list("abcdefghijkl"))
    loaded, info = artifacts.load_model(path, compile=False)
    assert info["streaming"] and info["input_rate"] == 16000 and info["sample_rate"] == 8000
    assert info["hop"] == info["input_samples"] == 4 * 96
    assert info["labels"] == list("abcdefghijkl")
    assert info["states"] == streaming_info(stream)["states"]
    rng = np.random.default_rng(0)
    states = {k: rng.normal(0, 0.1, v.shape).astype(np.float32)
              for k, v in zero_states(info).items()}
    feed = {"audio": rng.normal(0, 0.1, (1, info["hop"])).astype(np.float32), **states}
    a, b = stream.predict_on_batch(feed), loaded.predict_on_batch(feed)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-6)


@pytest.mark.slow
def test_streaming_model_exact_under_the_torch_backend():
    """keras.ops only: the same builder and the same exactness on PyTorch (in a subprocess,
    as the backend is fixed at import)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("torch")
    code = """if True:
        import sys; sys.path.insert(0, "tests")
        import keras, numpy as np
        assert keras.backend.backend() == "torch"
        from test_streaming_model import _model, _run, _reference, _windows
        from kws_tf import build_streaming_model
        from kws_tf.streaming.model import streaming_info
        from kws_tf.metrics import softmax
        audio = np.random.default_rng(0).normal(0, 0.1, 16000 * 2).astype("f")
        for variant, rate, hop in (("gru4", 8000, 1), ("gru6", 16000, 3)):
            model = _model(variant, rate)
            stream = build_streaming_model(model, hop)
            info = streaming_info(stream)
            got = _run(stream, audio, [0], 10)[0]
            signal, offset = _reference(model, audio, info)
            want = model.predict_on_batch(_windows(signal, offset, info, range(1, 11)))
            err = np.abs(got - softmax(keras.ops.convert_to_numpy(want))).max()
            assert err <= 1e-5, (variant, rate, err)
        print("ok")
    """
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]
