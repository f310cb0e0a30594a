import os
import pathlib
import struct

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Decoded-clip caches and generated data of this test session stay out of ~/.cache.
if "KWS_TF_CACHE" not in os.environ:
    import tempfile

    os.environ["KWS_TF_CACHE"] = tempfile.mkdtemp(prefix="kws-tf-test-cache-")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SUBSET = SHARED / "data" / "speech_commands_subset"
RESAMPLE_REFERENCE = SHARED / "testdata" / "resample_reference.npz"


@pytest.fixture(scope="session")
def subset_root():
    if not SUBSET.is_dir():
        pytest.skip(f"real Speech Commands subset not found at {SUBSET}")
    return SUBSET


def wav_bytes(x, rate=16000, bits=16, encoding="pcm", extensible=False, channels=1):
    """A WAV file's bytes, written here independently of kws_tf.

    x: (frames,) or (frames, ch) floats in [-1, 1] (clipped); ``channels`` > 1 repeats a mono x.
    """
    x = np.clip(np.asarray(x, np.float64), -1, 1)
    x = x[:, None] if x.ndim == 1 else x
    if channels > 1 and x.shape[1] == 1:
        x = np.repeat(x, channels, axis=1)
    if encoding == "float":
        data = x.astype(f"<f{bits // 8}").tobytes()
    elif bits == 8:
        data = (np.round(x * 127) + 128).astype(np.uint8).tobytes()
    elif bits == 24:
        v = np.round(x * (2 ** 23 - 1)).astype("<i4")
        data = v.view(np.uint8).reshape(*v.shape, 4)[..., :3].tobytes()
    else:
        data = np.round(x * (2 ** (bits - 1) - 1)).astype(f"<i{bits // 8}").tobytes()
    tag = 3 if encoding == "float" else 1
    ch = x.shape[1]
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, ch, rate, rate * ch * bits // 8,
                      ch * bits // 8, bits)
    if extensible:  # cbSize, valid bits, channel mask, sub-format GUID (starts with the tag)
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + bytes(14)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def write_wav(path, audio, rate=16000, **kw):
    """Write ``wav_bytes(audio, rate, **kw)`` (default: 16-bit mono, as in Speech Commands)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wav_bytes(audio, rate, **kw))
    return path


def tiny_variant(base="gru1", name="tiny", **changes):
    """The study's block structure at a size that trains in seconds: the tests' one shrunk model."""
    from kws_tf import get_variant

    return get_variant(base).replace(name=name, **{"conv_channels": (8, 16), "gru_units": 8,
                                                   **changes})


def busy_batchnorm(model, rng, sharpen: float, conv_bias_sd: float = 0.0):
    """Give an untrained model's BatchNorms non-trivial statistics (so a block's activations on
    silence are not zero), optionally random conv biases, and a sharper classifier (scores
    that move); in layer order, so the same ``rng`` gives the same weights."""
    for layer in model.layers:
        if layer.name.endswith("_bn"):
            c = layer.moving_mean.shape[0]
            layer.set_weights([rng.uniform(0.5, 2.0, c), rng.normal(0, 0.3, c),
                               rng.normal(0, 0.05, c), rng.uniform(0.02, 0.2, c)])
        elif conv_bias_sd and layer.name.endswith("_conv"):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, conv_bias_sd, bias.shape)])
        elif layer.name == "classifier":
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel * sharpen, bias])
    return model


def tiny_data(root, rate):
    """Three classes of tones, in memory: 40 training, 12 validation, 12 test clips."""
    from kws_tf.training import SplitArrays, TrainingData

    rng = np.random.default_rng(rate)

    def split(n):
        y = rng.integers(0, 3, n).astype("int32")
        t = np.arange(rate)
        x = 0.5 * np.sin(t[None, :] * (y[:, None] + 1) * 0.05) + rng.uniform(-0.1, 0.1, (n, rate))
        return SplitArrays(x.astype("float32"), y)

    return TrainingData(None, ["a", "b", "c"], rate,
                        {"training": split(40), "validation": split(12), "testing": split(12)})


TINY_WORDS = ("down", "go", "yes")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """3 words of tones in the Speech Commands layout: 8 train, 3 val, 3 test clips each."""
    root = tmp_path_factory.mktemp("tiny_speech_commands")
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    val, test = [], []
    for w, word in enumerate(TINY_WORDS):
        for i in range(14):
            audio = 0.4 * np.sin(2 * np.pi * (300 + 250 * w) * t * (1 + 0.01 * i))
            audio += rng.normal(0, 0.05, t.shape)
            rel = f"{word}/{i:08x}_nohash_0.wav"
            write_wav(root / rel, audio[: 16000 - 500 * (i % 3)])  # some clips are short
            (val if i in (8, 9, 10) else test if i >= 11 else []).append(rel)
    write_wav(root / "_background_noise_" / "white_noise.wav", rng.normal(0, 0.3, 32000))
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    return root


@pytest.fixture(scope="session")
def trained(subset_root):
    """The small model trained on real clips (tests/_small_kws.py), shared by export and predict."""
    import _small_kws

    return _small_kws.trained_run(subset_root)


@pytest.fixture(scope="session")
def exported(subset_root):
    """Every export format of that model, made once."""
    import _small_kws

    return _small_kws.exported(subset_root)


def shrink_trials(tune, setattr=setattr):
    """Make the tuner's trials (experiments/tune/) train tiny_variant-sized models (channels and GRU units
    / 16, at least 4): the search, its reports and resume work as at full size, in seconds."""
    full = tune.variant_from_values

    def tiny(values, epochs, name="tuned"):
        v = full(values, epochs, name)
        return tiny_variant(v, name=v.name, conv_channels=tuple(max(4, c // 16) for c in v.conv_channels),
                            gru_units=max(4, v.gru_units // 16))

    setattr(tune, "variant_from_values", tiny)


def crash_at_step(step):
    """A callback that stops training like Ctrl-C once the optimizer has taken ``step`` steps."""
    import keras

    class Crash(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == step:
                raise KeyboardInterrupt

    return Crash()


# Tests that need the small model trained on real clips (a session fixture that trains it) are
# slow by what they use: `pytest -m "not slow"` leaves them out without marking each one.
SLOW_FIXTURES = {"trained", "exported"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
