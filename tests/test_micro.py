"""The streaming .tflite files under TensorFlow Lite for Microcontrollers' interpreter
(``tflite-micro``), packet by packet with the states fed back by name as a device loop does,
against LiteRT on the same packets.

float32: every packet's probabilities equal LiteRT's to 1e-4.  int8: TFLM's reference kernels
and LiteRT's optimised ones round some products differently, so the probabilities may differ
by a few quantization steps; what must not differ is what a device does with them: the
detections RecognizeCommands makes over a real recording.  The arena that ``micro.arena_bytes``
reports is the smallest that runs (16 bytes less does not).
"""
import numpy as np
import pytest

pytest.importorskip("tflite_micro")

from kws_tf.export import micro  # noqa: E402
from kws_tf.export.stream import (calibration_feeds, convert_stream_tflite,  # noqa: E402
                                  tflite_stream_graph)
from kws_tf.streaming import model as sm  # noqa: E402
from kws_tf.streaming.decision import DEFAULTS, RecognizeCommands  # noqa: E402
from kws_tf.inference.tflite import TFLiteModel  # noqa: E402

GAP = 0.4  # seconds of silence between the recording's words


def _recording(root, files, n=16):
    """The clips end to end at 16 kHz with GAP s of silence after each: (audio, words)."""
    from kws_tf.data import read_wav
    from kws_tf.data.audio import fix_length

    parts, words = [], []
    for f in files[:n]:
        parts += [fix_length(read_wav(root / f)[0], 16000), np.zeros(int(GAP * 16000))]
        words.append(f.split("/")[0])
    return np.concatenate(parts).astype(np.float32), words


def _packets(audio, hop):
    return audio[:len(audio) // hop * hop].reshape(-1, hop)


def _detections(probs, labels, hop_seconds):
    """What a device reports: RecognizeCommands over the packets' probabilities."""
    rc = RecognizeCommands(labels, DEFAULTS["average"], DEFAULTS["threshold"],
                           DEFAULTS["suppression"])
    out = []
    for k, p in enumerate(probs, start=1):
        end = k * hop_seconds
        d = rc.process(max(end - 1.0, 0.0), end, p)
        if d is not None:
            out.append((d.label, round(d.time, 6)))
    return out


def test_tiny_float32_stream_runs_under_tflm_as_under_litert(subset_root):
    """The fast sample: an untrained gru1 shrunk to the small model's size (four blocks) at
    8 kHz (resampler, states relative to silence), 40 packets of a real recording."""
    import keras

    from conftest import busy_batchnorm, tiny_variant
    from kws_tf.models import build_model

    keras.utils.set_random_seed(0)
    model = busy_batchnorm(build_model(
        tiny_variant("gru1", conv_channels=(16, 32, 32, 32), gru_units=32), 8000, 4), np.random.default_rng(0),
                           sharpen=8)
    info = sm.streaming_info(sm.build_streaming_model(model))
    content, _ = convert_stream_tflite(tflite_stream_graph(model), info, "none")
    files = sorted(str(p.relative_to(subset_root)) for w in ("yes", "no", "up", "down")
                   for p in sorted((subset_root / w).glob("*.wav"))[:1])
    audio, _ = _recording(subset_root, files)
    packets = _packets(audio, info["hop"])[:40]
    want = TFLiteModel(content).run(packets)
    got = micro.MicroStream(content).run(packets)
    assert np.abs(got - want).max() <= 1e-4
    assert np.ptp(want, axis=0).max() > 0.05  # the probabilities move: 1e-4 means something


@pytest.fixture(scope="module")
def small(trained, subset_root):
    """The shared small model's streaming files (float32, int8 with the export's scheme) and a
    recording of 16 test-split words."""
    import _small_kws
    from kws_tf import artifacts

    run_dir, data, _ = trained
    model, info = artifacts.load_model(run_dir / "model.keras", compile=False)
    stream = sm.build_streaming_model(model)
    sinfo = sm.streaming_info(stream)
    cal16, _ = _small_kws.export_data(data).stream_clips(int(info["sample_rate"]))
    graph = tflite_stream_graph(model)
    files = {q: convert_stream_tflite(graph, sinfo, q, calibration_feeds(stream, sinfo, cal16)
                                      if q == "int8" else None)[0] for q in ("none", "int8")}
    test_files = _small_kws.split_files(subset_root)["testing"]
    rng = np.random.default_rng(0)
    audio, words = _recording(subset_root, [test_files[i] for i in
                                            rng.permutation(len(test_files))])
    return files, sinfo, list(info["labels"]), _packets(audio, sinfo["hop"]), words


def test_float32_every_packet_equals_litert(small):
    files, _, _, packets, _ = small
    want = TFLiteModel(files["none"]).run(packets)
    got = micro.MicroStream(files["none"]).run(packets)
    assert np.abs(got - want).max() <= 1e-4
    assert np.ptp(want, axis=0).max() > 0.5  # a trained model: words come and go


def test_int8_makes_the_same_detections_as_litert(small):
    files, sinfo, labels, packets, words = small
    want = TFLiteModel(files["int8"]).run(packets)
    got = micro.MicroStream(files["int8"]).run(packets)
    hop_seconds = sinfo["hop"] / 16000
    expect = _detections(want, labels, hop_seconds)
    # enough detections for equal lists to mean something (the small model trained here finds
    # about half of the 16 words; how many is its rounding's business, not TFLM's)
    assert len(expect) >= len(words) // 4
    assert _detections(got, labels, hop_seconds) == expect
    # the probabilities themselves: TFLM's int8 kernels round apart from LiteRT's (0.027 at
    # most on 60 clips of one small model, 0.055 on another run's), a few output steps (1/256)
    # on average, and the same top label wherever LiteRT's is clear
    assert np.abs(got - want).max() <= 0.1 and np.abs(got - want).mean() <= 0.01
    top = np.sort(want, axis=1)
    clear = top[:, -1] - top[:, -2] > 0.1
    assert (got.argmax(1) == want.argmax(1))[clear].all()


def test_arena_is_the_smallest_that_runs(small):
    files, _, _, packets, _ = small
    for content in files.values():
        entry = micro.card_entry(content)
        arena = entry["arena_bytes"]
        positions, _ = micro.signature_positions(content)
        feeds = {"audio": packets[:1], **micro.MicroStream(content, arena).zero_states()}
        assert micro._runs(content, arena, feeds, positions)
        assert not micro._runs(content, arena - micro.ARENA_ALIGN, feeds, positions)
        assert entry["flash_bytes"] == len(content)
        assert {"CONV_2D", "FULLY_CONNECTED", "TANH", "LOGISTIC"} <= set(entry["ops"])
