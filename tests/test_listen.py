"""kws_tf.listen and predict --stream's packet path: the StreamingRunner's detections equal the
window path's on the same windows, the command line prints them as they are made (WAV, raw
PCM on stdin, a saved streaming model), and each odd input gets one clear line.

The model is an untrained one with a sharpened classifier, on real speech, so it makes
detections; what is asserted is that the two paths agree, never what the words are.
"""
import io
import json

import keras
import numpy as np
import pytest

from conftest import busy_batchnorm, write_wav
from kws_tf import artifacts, cli
from kws_tf.streaming import model as streaming_model
from kws_tf.metrics import softmax
from kws_tf.streaming.audio import StreamResampler, pcm_packets, wav_packets
from kws_tf.streaming.runner import StreamingRunner
from kws_tf.streaming.decision import RecognizeCommands
from kws_tf.layers.resample import Resample
from kws_tf.listen import main as listen
from kws_tf.models import build_model

LABELS = ["yes", "no", "up", "down"]
SETTINGS = dict(threshold=0.6, average_window=0.5, suppression=0.75)
FLAGS = ["--threshold", "0.6", "--average", "0.5", "--suppression", "0.75"]


@pytest.fixture(scope="module")
def speech(subset_root):
    """8 s of real speech at 16 kHz (8 clips end to end), as stored 16-bit samples."""
    from kws_tf.data import read_wav
    from kws_tf.data.audio import fix_length

    words = ["yes", "no", "up", "down", "left", "right", "on", "off"]
    clips = [fix_length(read_wav(sorted((subset_root / w).glob("*.wav"))[1])[0], 16000)
             for w in words]
    return np.round(np.concatenate(clips) * 32767).astype(np.int16)


def _model(rate, seed=0):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    return busy_batchnorm(build_model("gru4", rate, len(LABELS)), rng, sharpen=6)


@pytest.fixture(scope="module")
def files(tmp_path_factory, speech):
    folder = tmp_path_factory.mktemp("listen")
    paths = {"wav": write_wav(folder / "speech.wav", speech / 32767.0) or folder / "speech.wav"}
    for rate in (16000, 8000):
        paths[rate] = artifacts.save_model(_model(rate), folder / f"model_{rate}.keras", LABELS)
    return paths


def _window_path(model, audio16, hop16, delay, rate):
    """The window model on the windows that end at the packet ends, zeros before."""
    lead = 2 * 16000
    signal = np.concatenate([np.zeros(lead, np.float32), audio16])
    if rate != 16000:
        signal = np.asarray(Resample(16000, rate)(signal[None]))[0]
    per = rate / 16000
    ends = [int(round((lead + k * hop16) * per)) - delay for k in range(1, len(audio16) // hop16 + 1)]
    probs = softmax(model.predict_on_batch(np.stack([signal[e - rate:e] for e in ends])))
    recognizer = RecognizeCommands(LABELS, **SETTINGS)
    out = []
    for k, p in enumerate(probs, start=1):
        end = k * hop16 / 16000 - delay / rate
        d = recognizer.process(max(end - 1.0, 0.0), end, p)
        if d is not None:
            out.append(d)
    return out


@pytest.mark.parametrize("rate", [16000, 8000])
def test_streaming_detections_equal_the_window_path(files, speech, rate):
    model, _ = artifacts.load_model(files[rate], compile=False)
    notes = []
    runner = StreamingRunner.from_window_model(model, LABELS, hop=0.25, note=notes.append)
    assert notes and notes[0].startswith("note: --hop 0.25 s rounded to")
    got = list(runner.detections(wav_packets(files["wav"], runner.hop),
                                 RecognizeCommands(LABELS, **SETTINGS)))
    want = _window_path(model, speech / np.float32(32768.0), runner.hop,
                        runner.info["delay"], rate)
    assert len(want) >= 2  # the comparison says something
    assert [d.label for d in got] == [d.label for d in want]
    np.testing.assert_allclose([(d.start, d.time) for d in got], [(d.start, d.time) for d in want],
                               atol=1e-9)
    assert [d.score for d in got] == pytest.approx([d.score for d in want], abs=1e-5)


def test_listen_wav_stdin_json_and_saved_streaming_model(files, speech, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    assert listen([str(files[8000]), str(files["wav"]), *FLAGS], stdout=out, stderr=err) == 0
    lines = out.getvalue().splitlines()
    assert "is a window model: streaming it exactly in 96 ms packets" in err.getvalue()
    assert err.getvalue().strip().splitlines()[-1].endswith(f"s of {files['wav']}")
    model, _ = artifacts.load_model(files[8000], compile=False)
    runner = StreamingRunner.from_window_model(model, LABELS)
    expect = list(runner.detections(wav_packets(files["wav"], runner.hop),
                                    RecognizeCommands(LABELS, **SETTINGS)))
    assert len(lines) == len(expect) >= 1
    assert [line.split()[1] for line in lines] == [d.label for d in expect]

    # raw PCM on stdin: the same samples, the same detections, one JSON object per line
    out = io.StringIO()
    assert listen([str(files[8000]), "-", "--json", *FLAGS], stdin=io.BytesIO(speech.tobytes()),
                  stdout=out, stderr=io.StringIO()) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert all(set(r) == {"label", "score", "start", "time"} for r in rows)
    assert [r["label"] for r in rows] == [d.label for d in expect]
    assert [r["time"] for r in rows] == pytest.approx([d.time for d in expect])

    # a saved model_stream.keras gives the same
    stream = streaming_model.build_streaming_model(model)
    saved = streaming_model.save(stream, tmp_path / "model_stream.keras", LABELS)
    out = io.StringIO()
    assert listen([str(saved), str(files["wav"]), "--json", *FLAGS], stdout=out,
                  stderr=io.StringIO()) == 0
    assert [json.loads(line) for line in out.getvalue().splitlines()] == rows


def test_listen_one_line_for_each_odd_input(files, speech, tmp_path, capsys):
    model16 = str(files[16000])
    # input ending mid-packet, on stdin with half a sample too
    err = io.StringIO()
    raw = speech[:768 * 3 + 100].tobytes() + b"\x01"
    assert listen([model16, "-"], stdin=io.BytesIO(raw), stdout=io.StringIO(), stderr=err) == 0
    assert ("note: the input ended mid-packet: its last 100 samples and half a sample (6.2 ms of "
            "a 48 ms packet) are not scored") in err.getvalue()
    # a WAV at another rate is resampled as it is read, to the samples Resample gives
    x = speech[:32000] / np.float32(32768.0)
    path44 = tmp_path / "speech44k.wav"
    write_wav(path44, np.asarray(Resample(16000, 44100)(x[None]))[0], rate=44100)
    notes = []
    packets = np.concatenate(list(wav_packets(path44, 768, notes.append, frames_per_read=1000)))
    assert notes[0] == f"note: {path44} is 44100 Hz: resampled to 16000 Hz as it is read"
    from kws_tf.data import read_wav

    whole = np.asarray(Resample(44100, 16000)(read_wav(path44)[0][None]))[0]
    np.testing.assert_allclose(packets, whole[:len(packets)], atol=1e-5)
    # a closed output pipe: one line, exit 0, nothing raised

    class Closed(io.StringIO):
        def write(self, s):
            raise BrokenPipeError

    err = io.StringIO()
    assert listen([model16, str(files["wav"]), "--threshold", "0.3"], stdout=Closed(),
                  stderr=err) == 0
    assert "listen: the output was closed; stopped after" in err.getvalue()
    # not a streaming model, not a model, no input: one error line each, exit 2
    folder = tmp_path / "savedmodel"
    folder.mkdir()
    fake = tmp_path / "model_float32.tflite"
    fake.write_bytes(b"not a flatbuffer")
    for argv, says in [([str(folder), str(files["wav"])], "is a SavedModel (a window model)"),
                       ([str(fake), str(files["wav"])], "cannot load as a TFLite model"),
                       ([model16, str(tmp_path / "none.wav")], "none.wav: no such file"),
                       ([str(tmp_path / "none.keras"), "-"], "no model at")]:
        assert cli.run(listen, argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines[-1].startswith("error: ") and says in lines[-1], (argv, lines)


def test_stream_resampler_matches_resample_in_any_pieces():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.3, 5000).astype(np.float32)
    for orig, new in ((44100, 16000), (8000, 16000), (48000, 16000)):
        r = StreamResampler(orig, new)
        cuts = np.sort(rng.integers(0, len(x), 7))
        pieces = np.split(x, cuts)
        y = np.concatenate([r(p, last=i == len(pieces) - 1) for i, p in enumerate(pieces)])
        np.testing.assert_allclose(y, np.asarray(Resample(orig, new)(x[None]))[0], atol=1e-5)


def test_pcm_packets_never_read_ahead():
    class Source(io.BytesIO):
        reads = []

        def read(self, n=-1):
            self.reads.append(n)
            return super().read(n)

    source = Source(np.arange(1000, dtype="<i2").tobytes())
    packets = pcm_packets(source, 100)
    first = next(packets)
    assert source.reads == [200] and first[1] == np.float32(1 / 32768)
    assert len(list(packets)) == 9


def test_predict_stream_packets(files, capsys):
    from kws_tf.predict import main as predict

    argv = [str(files[16000]), str(files["wav"]), "--stream", "--json", *FLAGS]
    assert predict(argv + ["--hop", "0.1"]) == 0
    captured = capsys.readouterr()
    assert "note: --hop 0.1 s rounded to 0.096 s (2 x the model's 48 ms stride)" in captured.err
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert listen([str(files[16000]), str(files["wav"]), "--json", "--hop", "0.096", *FLAGS]) == 0
    heard = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == [r["label"] for r in heard]
    assert [r["time"] for r in rows] == pytest.approx([r["time"] for r in heard], abs=1e-6)
    assert [r["start"] for r in rows] == pytest.approx([r["start"] for r in heard], abs=1e-6)
    # another window length: the window model itself slides (a streaming model scores 1 s)
    assert cli.run(predict, argv + ["--window", "0.8"]) == 0
    assert "rounded" not in capsys.readouterr().err
    from kws_tf.streaming import model as streaming_model

    saved = streaming_model.save(streaming_model.build_streaming_model(_model(16000), 2),
                                 files["wav"].parent / "model_stream.keras", LABELS)
    assert cli.run(predict, [str(saved), *argv[1:], "--window", "0.8"]) == 2
    assert "--window must be 1.0" in capsys.readouterr().err


def test_a_models_own_decision_settings_are_used_and_said(files, tmp_path, capsys):
    """A model.keras whose metadata holds decision settings streams with them unless a flag
    says otherwise, and listen/predict say which settings they use and where from."""
    from kws_tf.predict import main as predict

    path = artifacts.save_model(_model(16000), tmp_path / "tuned.keras", LABELS,
                                decision={"threshold": 0.99, "average": 0.25, "suppression": 2.0})
    assert listen([str(path), str(files["wav"]), "--json"]) == 0
    captured = capsys.readouterr()
    assert ("decision: threshold 0.99 (the model's), average 0.25 s (the model's), "
            "suppression 2 s (the model's)") in captured.err
    strict = [json.loads(line) for line in captured.out.splitlines()]
    assert all(r["score"] >= 0.99 for r in strict)
    assert listen([str(path), str(files["wav"]), "--json", "--threshold", "0.3"]) == 0
    captured = capsys.readouterr()
    assert "threshold 0.3 (--threshold)" in captured.err and "average 0.25 s (the model's)" in captured.err
    loose = [json.loads(line) for line in captured.out.splitlines()]
    assert len(loose) > len(strict), (loose, strict)  # the flag, not the model's 0.99, decided
    assert predict([str(path), str(files["wav"]), "--stream", "--json"]) == 0
    assert "threshold 0.99 (the model's)" in capsys.readouterr().err


def test_listen_reports_only_the_models_words_unless_words_says_otherwise(files, tmp_path):
    """A decision that names words (a model of every word spots the commands) reports only
    them, the other labels summed into _unknown_; --words picks others, --words all every label."""
    import shutil

    model, _ = artifacts.load_model(files[8000], compile=False)
    runner = StreamingRunner.from_window_model(model, LABELS)

    def expected(words):
        return [d.label for d in runner.detections(
            wav_packets(files["wav"], runner.hop), RecognizeCommands(LABELS, **SETTINGS, words=words))]

    every = expected(None)
    assert len(set(every)) >= 2  # the untrained model says more than one word here
    kept = sorted(set(every))[:1]
    path = shutil.copy(files[8000], tmp_path / "spotter.keras")
    artifacts.update_model_info(path, decision={"threshold": 0.6, "average": 0.5,
                                                "suppression": 0.75, "words": kept})
    for flags, words, said in (([], kept, f"words {kept[0]} (the model's"),
                               (["--words", "all"], None, None),
                               (["--words", ",".join(LABELS[:2])], LABELS[:2], "(--words")):
        out, err = io.StringIO(), io.StringIO()
        assert listen([str(path), str(files["wav"]), *flags], stdout=out, stderr=err) == 0
        assert [line.split()[1] for line in out.getvalue().splitlines()] == expected(words)
        line = [ln for ln in err.getvalue().splitlines() if ln.startswith("decision: ")]
        assert len(line) == 1 and ((said in line[0]) if said else "words" not in line[0])
    assert set(expected(kept)) <= set(kept)
    err = io.StringIO()
    with pytest.raises(ValueError, match="--words: left not among the model's labels"):
        listen([str(path), str(files["wav"]), "--words", "yes,left"], stdout=io.StringIO(),
               stderr=err)


def _listen(argv, stdin=None):
    out, err = io.StringIO(), io.StringIO()
    assert listen(argv, stdin=stdin, stdout=out, stderr=err) == 0, err.getvalue()
    return out.getvalue(), err.getvalue()


def test_a_wav_on_stdin_is_read_as_a_wav_and_raw_pcm_takes_a_rate(files, speech, tmp_path):
    from conftest import wav_bytes
    from kws_tf.data.audio import resample

    model16 = str(files[16000])
    x22 = resample(speech / np.float32(32768.0), 16000, 22050)
    path22 = tmp_path / "speech22.wav"
    path22.write_bytes(wav_bytes(x22, 22050))
    from_file, _ = _listen([model16, str(path22), "--json", *FLAGS])
    assert from_file  # the comparison says something
    piped, err = _listen([model16, "-", "--json", *FLAGS], stdin=io.BytesIO(path22.read_bytes()))
    assert piped == from_file
    assert "standard input is a WAV (22050 Hz" in err and "resampled to 16000 Hz" in err
    # the summary (plain output) counts the same seconds as for the file
    summary = _listen([model16, str(path22), *FLAGS])[1].strip().splitlines()[-1]
    piped_summary = _listen([model16, "-", *FLAGS],
                            stdin=io.BytesIO(path22.read_bytes()))[1].strip().splitlines()[-1]
    assert piped_summary == summary.replace(str(path22), "standard input")
    # a tool writing to a pipe cannot know the size: 0xFFFFFFFF means "until the end"
    unknown = bytearray(path22.read_bytes())
    at = unknown.index(b"data") + 4
    unknown[at:at + 4] = b"\xff\xff\xff\xff"
    assert _listen([model16, "-", "--json", *FLAGS], stdin=io.BytesIO(bytes(unknown)))[0] == from_file

    # raw PCM at 8 kHz with --rate: what the same samples give as an 8 kHz WAV file
    x8 = np.round(resample(speech / np.float32(32768.0), 16000, 8000) * 32767).astype("<i2")
    path8 = tmp_path / "speech8.wav"
    path8.write_bytes(wav_bytes(x8 / 32767.0, 8000))
    raw8, err = _listen([model16, "-", "--json", "--rate", "8000", *FLAGS],
                        stdin=io.BytesIO(x8.tobytes()))
    assert raw8 == _listen([model16, str(path8), "--json", *FLAGS])[0]
    assert "is 8000 Hz: resampled to 16000 Hz" in err
    # headerless input stays raw 16 kHz PCM without --rate
    assert _listen([model16, "-", "--json", *FLAGS], stdin=io.BytesIO(speech.tobytes()))[0] \
        == _listen([model16, str(files["wav"]), "--json", *FLAGS])[0]
    # --rate with a WAV that says otherwise, or with a file: one error line
    for argv, stdin, says in [([model16, "-", "--rate", "8000"], path22.read_bytes(), "--rate 8000"),
                              ([model16, str(path22), "--rate", "8000"], None, "--rate is for raw PCM")]:
        err = io.StringIO()
        import sys
        saved, sys.stderr = sys.stderr, err
        try:
            assert cli.run(lambda a: listen(a, stdin=io.BytesIO(stdin or b""), stderr=err), argv) == 2
        finally:
            sys.stderr = saved
        assert err.getvalue().strip().splitlines()[-1].startswith("error: ")
        assert says in err.getvalue()


def test_a_stream_shorter_than_the_window_is_scored_to_its_end(files, speech):
    model, _ = artifacts.load_model(files[16000], compile=False)
    runner = StreamingRunner.from_window_model(model, LABELS)
    clip = speech[16000:16000 + 9920]  # 0.62 s of the second word
    notes = []
    windows = list(runner.windows(pcm_packets(io.BytesIO(clip.tobytes()), runner.hop),
                                  note=notes.append))
    whole = 9920 // runner.hop  # packets of the input itself
    assert windows[whole - 1][1] < 1.0 <= windows[-1][1]  # silence packets until a full window
    assert windows[-2][1] < 1.0 and len(windows) > whole
    assert any("shorter than the model's 1 s window: scored with silence after it" in n
               for n in notes)
    # the last window is the window model on the clip followed by silence
    end = len(windows) * runner.hop
    padded = np.zeros(end, np.float32)
    padded[:whole * runner.hop] = clip[:whole * runner.hop] / np.float32(32768.0)
    want = softmax(model.predict_on_batch(padded[None, end - 16000:]))[0]
    np.testing.assert_allclose(windows[-1][2], want, atol=1e-5)
    # the command line says it once and reports the input's own length
    out, err = _listen([str(files[16000]), "-"], stdin=io.BytesIO(clip.tobytes()))
    assert err.count("shorter than the model's 1 s window") == 1
    assert f"in {whole * runner.hop / 16000:.2f} s of standard input" in err


def test_predict_stream_and_listen_share_one_path_and_default_hop(files, capsys):
    """No --hop: both stream the window model.keras at its default hop (no rounding note),
    and print the same lines."""
    from kws_tf.predict import main as predict

    args = [str(files[16000]), str(files["wav"]), *FLAGS]
    assert predict([*args[:2], "--stream", *FLAGS]) == 0
    streamed = capsys.readouterr()
    heard_out, heard_err = _listen(args)
    assert streamed.out == heard_out and heard_out
    assert "rounded" not in streamed.err and "rounded" not in heard_err
    assert "streaming it exactly in 48 ms packets (its default hop)" in streamed.err
    assert streamed.err.strip().splitlines()[-1] == heard_err.strip().splitlines()[-1]
