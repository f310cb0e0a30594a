"""python -m kws_tf.web and its page, in a real browser (Debian's chromium, headless, driven by
Playwright): the page's probabilities equal LiteRT's in Python at every packet, its decision
(decision.js) equals the Python rule's, the microphone path (Chromium's fake capture playing a
recording) names the words listen names, and each failure a user can meet is shown in the page.

The model is the small spotter trained on real clips (tests/_small_kws.py, shared with the
export and predict tests) in its streaming form.  The recording is made of test-split clips
that listen detects with a margin over the threshold (checked here), so that the browser's
resampling (the fake device's rate to the AudioContext's, the page's back to 16 kHz) and a
packet grid shifted by the capture's start cannot flip a word.

Without Playwright, chromium or `npm ci --prefix kws_tf/web` these tests skip, except where
KWS_TF_REQUIRE_BROWSER is set (.ci/run): there they fail.
"""
import dataclasses
import os
import shutil
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import write_wav

# The Python decision rule, named in ONE place (it may move to kws_tf.streaming.decision).
from kws_tf.streaming.decision import RecognizeCommands, decision_settings, recognizer

pytestmark = pytest.mark.slow

THRESHOLD = 0.6  # the small model (4 words, _silence_) averages 0.7-0.95 over its clear words
MARGIN = 0.1  # a clip goes in the recording if listen finds it at THRESHOLD + MARGIN too
WORDS = ("yes", "no", "up", "down")
GAP = 12000  # 0.75 s of silence between words: more than the suppression
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _missing(why: str):
    if os.environ.get("KWS_TF_REQUIRE_BROWSER"):
        pytest.fail(f"browser tests cannot run: {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def web_export(request):
    """The small model's streaming files (float32 and int8), without choosing decision
    settings on recordings (source None): the tests pass their own.  KWS_TF_WEB_EXPORT=FOLDER
    runs the file on another export instead (the shipped spotter, for docs/web.png)."""
    import _small_kws
    from kws_tf.export import export

    if os.environ.get("KWS_TF_WEB_EXPORT"):
        return Path(os.environ["KWS_TF_WEB_EXPORT"]).resolve()
    run_dir, data, _ = request.getfixturevalue("trained")
    out = run_dir.parent / "web-export"
    if not (out / "model_stream_int8.tflite").is_file():
        export_data = dataclasses.replace(_small_kws.export_data(data), source=None)
        export(run_dir / "model.keras", out, formats=[], quantize=["int8"], data=export_data,
               parity_clips=6, streaming=True, log=lambda *a: None)
    return out


def _listen(model, wav, **flags):
    """listen's detections on a WAV file (the library path it runs, without a subprocess)."""
    from kws_tf.streaming.runner import StreamingRunner
    from kws_tf.streaming.audio import wav_packets

    runner = StreamingRunner.load(model)
    settings, _ = decision_settings(runner.info, **flags)
    return list(runner.detections(wav_packets(wav, runner.hop),
                                  recognizer(runner.labels, settings)))


@pytest.fixture(scope="session")
def recording(web_export, subset_root, tmp_path_factory):
    """(WAV path, samples, listen's detections): one test-split clip of each word, chosen by
    listen's margin, between stretches of silence."""
    from kws_tf.data import load_splits, read_wav
    from kws_tf.data.audio import fix_length
    from kws_tf.inference.tflite import read_metadata

    folder = tmp_path_factory.mktemp("web-recording")
    model = web_export / "model_stream_float32.tflite"
    _, splits = load_splits(subset_root)
    gap = np.zeros(GAP, np.float32)
    hop = read_metadata(model)["hop"]
    chosen = []
    for word in WORDS:
        for f in [f for f in splits["testing"] if f.startswith(word + "/")][:20]:
            clip = fix_length(read_wav(subset_root / f)[0], 16000).astype(np.float32)
            # clear: listen finds the word alone at the test's threshold and also at
            # THRESHOLD + MARGIN, at any alignment to the packet grid (the page's packets start
            # wherever the capture did): four quarter-packet shifts
            clear = True
            for shift in range(0, hop, hop // 4):
                wav = write_wav(folder / "one.wav",
                                np.concatenate([gap, np.zeros(shift, np.float32), clip, gap]))
                clear &= all([d.label for d in _listen(model, wav, threshold=t)] == [word]
                             for t in (THRESHOLD, THRESHOLD + MARGIN))
            if clear:
                chosen.append(clip)
                break
        assert len(chosen) == WORDS.index(word) + 1, f"no clear {word} among the first clips"
    audio = np.concatenate([gap, *[np.concatenate([c, gap]) for c in chosen], gap])
    path = write_wav(folder / "words.wav", audio)
    audio = np.round(np.clip(audio, -1, 1) * 32767) / np.float32(32768.0)  # as read back
    found = _listen(model, path, threshold=THRESHOLD)
    assert [d.label for d in found] == list(WORDS)
    return path, audio.astype(np.float32), found


def _strip_metadata(content: bytes) -> bytes:
    """A TFLite file as another program would write it: the same model without kws_tf's entry."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(content, 0))
    model.metadata = [m for m in model.metadata or [] if m.name not in (b"kws_tf", "kws_tf")]
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.fixture(scope="session")
def site(web_export, tmp_path_factory):
    """The page folder (float32; the int8 file beside it for ?model=) served on 127.0.0.1."""
    from kws_tf import web

    try:
        web.runtime_dir()
    except FileNotFoundError as e:
        _missing(str(e))
    folder = tmp_path_factory.mktemp("web") / "page"
    web.build_page(web_export, folder, "float32")
    shutil.copyfile(web_export / "model_stream_int8.tflite", folder / "model_int8.tflite")
    plain = _strip_metadata((web_export / "model_stream_float32.tflite").read_bytes())
    (folder / "plain.tflite").write_bytes(plain)
    httpd = web.server(folder, 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def browser(recording):
    """One headless chromium for the session; its fake microphone plays the recording once.
    The microphone permission is granted per context (``_open(..., mic=True)``) rather than
    by --use-fake-ui-for-media-stream, which would grant it to every page: the denied case
    needs a page where the browser says no."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[web]')")
    if not os.path.exists(CHROMIUM):
        _missing("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={recording[0]}%noloop"])
        yield b
        b.close()


def _open(browser, url, ready="window.kws && (window.kws.meta || window.kws.errors.length)",
          mic=False):
    """A fresh context on ``url``, loaded; it records (and refuses) any request that leaves
    127.0.0.1 in ``context.outside``: the page must work offline."""
    context = browser.new_context(permissions=["microphone"] if mic else [])
    context.outside = []
    local = url.split("?")[0]

    def refuse(route):
        context.outside.append(route.request.url)
        route.abort()

    context.route(lambda u: u.startswith("http") and not u.startswith(local), refuse)
    page = context.new_page()
    page.goto(url)
    page.wait_for_function(ready, timeout=60_000)
    return context, page


def _feed(page, audio):
    page.evaluate("(a) => window.kws.feed(new Float32Array(a))", audio.tolist())
    return np.array(page.evaluate("window.kws.probabilities()"), np.float32)


def _as_tuples(detections):
    return [(d["label"], d["start"], d["time"], d["score"]) if isinstance(d, dict) else
            (d.label, d.start, d.time, d.score) for d in detections]


@pytest.mark.parametrize("quantization", ["float32", "int8"])
def test_page_probabilities_equal_litert_and_detections_equal_listens(
        site, browser, recording, web_export, quantization):
    from kws_tf.inference.tflite import TFLiteModel, read_metadata

    folder, url = site
    name = "model.tflite" if quantization == "float32" else "model_int8.tflite"
    context, page = _open(browser, f"{url}?model={name}&threshold={THRESHOLD}")
    try:
        assert page.evaluate("window.kws.errors") == []
        # the page read the metadata from the file's bytes: the same JSON as Python's reader
        assert page.evaluate("window.kws.meta") == read_metadata(folder / name)
        _, audio, _ = recording
        got = _feed(page, audio)
        stream = TFLiteModel(folder / name)
        hop = stream.hop
        want = stream.run(audio[:len(audio) // hop * hop].reshape(-1, hop))
        assert got.shape == want.shape and len(got) > 80
        # int8: the same integer kernels (XNNPack) in WebAssembly and natively
        assert np.abs(got - want).max() <= 1e-4, np.abs(got - want).max()
        detections = page.evaluate("window.kws.detections")
        path = web_export / f"model_stream_{quantization}.tflite"
        listened = _listen(path, recording[0], threshold=THRESHOLD)
        assert len(listened) >= 3  # the comparison says something
        got_d, want_d = _as_tuples(detections), _as_tuples(listened)
        assert [d[0] for d in got_d] == [d[0] for d in want_d]
        np.testing.assert_allclose([d[1:3] for d in got_d], [d[1:3] for d in want_d], atol=1e-9)
        assert [d["score"] for d in detections] == pytest.approx(
            [d.score for d in listened], abs=1e-4)
        timings = page.evaluate("window.kws.timings")
        assert len(timings) == len(got) and all(t > 0 for t in timings)
        assert context.outside == []
    finally:
        context.close()


def test_page_words_view_equals_listens(site, browser, recording, web_export):
    """?words= as listen's --words: the other labels count as _unknown_, in the bars too."""
    _, url = site
    context, page = _open(browser, f"{url}?threshold={THRESHOLD}&words=yes,up")
    try:
        _feed(page, recording[1])
        labels = page.locator("#bars .label").all_inner_texts()
        assert sorted(labels) == ["_silence_", "_unknown_", "up", "yes"]
        listened = _listen(web_export / "model_stream_float32.tflite", recording[0],
                           threshold=THRESHOLD, words="yes,up")
        got = page.evaluate("window.kws.detections")
        assert [d.label for d in listened] == ["yes", "up"]  # no and down fell into _unknown_
        assert [d["label"] for d in got] == [d.label for d in listened]
        np.testing.assert_allclose([d["time"] for d in got], [d.time for d in listened], atol=1e-9)
        assert "words yes, up (URL)" in page.locator("#settings").inner_text()
    finally:
        context.close()


def test_decision_js_equals_the_python_rule(site, browser):
    """decision.js and RecognizeCommands on the same probability streams, at several settings
    and with a words view that sums 11 other labels into _unknown_ (numpy's pairwise sum)."""
    _, url = site
    labels = ["_silence_", "_unknown_"] + [f"w{i}" for i in range(14)]
    rng = np.random.default_rng(3)
    # bursts of one label (a word) between stretches of noise, 0.1 s windows
    logits = rng.normal(0, 1, (400, len(labels)))
    for k, start in enumerate(range(0, 400, 20)):  # every other burst on w1, w2 or w5
        label = rng.integers(len(labels)) if k % 2 else labels.index(f"w{(1, 2, 5)[k // 2 % 3]}")
        logits[start:start + rng.integers(3, 12), label] += rng.uniform(3, 8)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    probs = probs.astype(np.float32)
    ends = np.round(np.arange(1, 401) * 0.1 - 0.003, 6)
    cases = [dict(threshold=0.5, average=0.3, suppression=0.5, words=None),
             dict(threshold=0.7, average=0.5, suppression=0.75, words=None),
             dict(threshold=0.4, average=0.25, suppression=0.0, words=["w1", "w2", "w5"])]
    context, page = _open(browser, url)
    try:
        for case in cases:
            py = RecognizeCommands(labels, case["average"], case["threshold"], case["suppression"],
                                   2, case["words"])
            want = [d for s, e, p in zip(np.maximum(ends - 1, 0), ends, probs)
                    if (d := py.process(float(s), float(e), p)) is not None]
            got = page.evaluate("""async ([labels, setting, starts, ends, probs]) => {
                const {RecognizeCommands} = await import('./decision.js');
                const r = new RecognizeCommands(labels, setting);
                return ends.map((e, i) => r.process(starts[i], e, probs[i])).filter((d) => d);
            }""", [labels, case, np.maximum(ends - 1, 0).tolist(), ends.tolist(), probs.tolist()])
            assert len(want) >= 5, case
            assert _as_tuples(got) == _as_tuples(want), case  # exactly: scores too
    finally:
        context.close()


def test_page_resampler_keeps_the_speech_band(site, browser):
    """audio.js's Resampler (the worklet's), 44.1 and 48 kHz to 16 kHz in the worklet's
    128-sample blocks, against kws_tf's resampler on the whole signal: a signal below 6 kHz
    comes through, aligned (no delay) and at the same level."""
    from kws_tf.data.audio import resample

    _, url = site
    context, page = _open(browser, url)
    try:
        for rate in (44100, 48000):
            t = np.arange(rate) / rate
            rng = np.random.default_rng(rate)
            x = sum(rng.uniform(0.05, 0.15) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6))
                    for f in rng.uniform(80, 6000, 12)).astype(np.float32)
            got = np.array(page.evaluate("""async ([x, rate]) => {
                const {Resampler} = await import('./audio.js');
                const r = new Resampler(rate, 16000), out = [];
                for (let i = 0; i < x.length; i += 128) out.push(...r.push(Float32Array.from(x.slice(i, i + 128))));
                return out;
            }""", [x.tolist(), rate]))
            want = np.asarray(resample(x[None], rate, 16000))[0]
            n = min(len(got), len(want)) - 200  # the stream holds back its last taps' worth
            assert n > 15000
            err = np.abs(got[200:n] - want[200:n]).max() / np.abs(want).max()
            assert err < 0.01, (rate, err)
    finally:
        context.close()


def test_microphone_path_names_the_words_listen_names(site, browser, recording):
    """Chromium's fake microphone plays the recording (16 kHz, resampled by the browser to the
    AudioContext's rate and by the page back to 16 kHz); the page's detections name the same
    words as listen's, at about the same times (the capture starts a little before the page
    connects the worklet, and the word's average may pass the threshold a packet or few
    sooner or later: times may shift by some tenths of a second)."""
    _, url = site
    path, audio, listened = recording
    context, page = _open(browser, f"{url}?threshold={THRESHOLD}", mic=True)
    try:
        page.click("#start")
        seconds = len(audio) / 16000
        page.wait_for_function(f"window.kws.packets * window.kws.meta.hop / 16000 > {seconds + 0.3}",
                               timeout=int(seconds * 1000) + 60_000)
        assert page.evaluate("window.kws.errors") == []
        rate = page.evaluate("window.kws.contextRate")
        assert rate and rate != 16000  # the page's resampler was in the path
        detections = page.evaluate("window.kws.detections")
        assert [d["label"] for d in detections] == [d.label for d in listened]
        # each word is found while its clip is in the window (clip k starts after k + 1 gaps
        # and k clips; the window is 1 s), and near where listen found it
        starts = [(GAP * (k + 1) + 16000 * k) / 16000 for k in range(len(WORDS))]
        for d, start in zip(detections, starts):
            assert start < d["time"] < start + 2.0, (d, start)
        np.testing.assert_allclose([d["time"] for d in detections], [d.time for d in listened],
                                   atol=0.75)
        # the detections are in the page too, not only in window.kws
        assert page.locator("#detections li").count() == len(listened)
        if os.environ.get("KWS_TF_WEB_SCREENSHOT"):
            page.screenshot(path=os.environ["KWS_TF_WEB_SCREENSHOT"], full_page=True)
    finally:
        context.close()


def _message(page):
    box = page.locator("#message")
    box.wait_for(state="visible", timeout=30_000)
    return box.get_attribute("data-kind"), box.inner_text()


def test_errors_are_shown_in_the_page(site, browser, recording, tmp_path):
    folder, url = site
    # microphone denied: a context without the permission (headless chromium says no)
    context, page = _open(browser, url)
    try:
        page.click("#start")
        kind, text = _message(page)
        assert kind == "mic-denied" and "denied" in text
    finally:
        context.close()
    # no microphone: this browser has its fake one, so getUserMedia answers as on a machine
    # without any (NotFoundError), granted or not
    context = browser.new_context(permissions=["microphone"])
    try:
        context.add_init_script("navigator.mediaDevices.getUserMedia = () => "
                                "Promise.reject(new DOMException('Requested device not found', "
                                "'NotFoundError'));")
        page = context.new_page()
        page.goto(url)
        page.wait_for_function("window.kws && window.kws.meta")
        page.click("#start")
        kind, text = _message(page)
        assert kind == "no-mic" and "No usable microphone" in text
    finally:
        context.close()
    # a .tflite that is not a streaming model, and a file that is not a .tflite at all
    context, page = _open(browser, url)
    try:
        page.set_input_files("#file", str(folder / "plain.tflite"))
        kind, text = _message(page)
        assert kind == "not-streaming" and "plain.tflite" in text and "not a streaming model" in text
        page.set_input_files("#file", str(recording[0]))
        page.wait_for_function("window.kws.errors.length == 2")
        kind, text = _message(page)
        assert kind == "not-streaming" and "not a TFLite model" in text
        cut = (folder / "model.tflite").read_bytes()[:4096]  # a download that stopped early
        page.set_input_files("#file", {"name": "cut.tflite", "mimeType": "application/octet-stream",
                                       "buffer": cut})
        page.wait_for_function("window.kws.errors.length == 3")
        kind, text = _message(page)
        assert kind == "not-streaming" and "cut.tflite: this TFLite file cannot be read" in text
        # the model loaded before still runs
        assert page.evaluate("window.kws.meta.format") == "kws_tf.streaming"
    finally:
        context.close()
    # the page's own model, when it is not a streaming one
    context, page = _open(browser, f"{url}?model=plain.tflite")
    try:
        assert _message(page)[0] == "not-streaming"
    finally:
        context.close()
    # decision settings in the URL that listen would refuse
    context, page = _open(browser, f"{url}?threshold=1.5")
    try:
        kind, text = _message(page)
        assert kind == "settings" and "threshold must be in (0, 1]" in text
    finally:
        context.close()
    # the WebAssembly files fail to load
    context = browser.new_context()
    try:
        page = context.new_page()
        page.route("**/*.wasm", lambda route: route.abort())
        page.goto(url)
        kind, text = _message(page)
        assert kind == "wasm" and "WebAssembly" in text
    finally:
        context.close()


# ----------------------------------------------------------------------------- the command
def test_command_writes_a_self_contained_folder_and_says_which_file(web_export, tmp_path,
                                                                      capsys):
    from kws_tf import web
    from kws_tf.web.__main__ import main

    try:
        web.runtime_dir()
    except FileNotFoundError as e:
        _missing(str(e))
    assert main([str(web_export), "--output", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "model_stream_int8.tflite (int8" in err
    assert (tmp_path / "a" / "model.tflite").read_bytes() == \
        (web_export / "model_stream_int8.tflite").read_bytes()
    assert main([str(web_export), "--output", str(tmp_path / "b"), "--precision", "float32"]) == 0
    assert "model_stream_float32.tflite (float32" in capsys.readouterr().err
    html = (tmp_path / "b" / "index.html").read_text()
    # the page's own files name no server (the browser tests refuse any request off 127.0.0.1)
    for f in [*(tmp_path / "b").glob("*.js"), tmp_path / "b" / "index.html"]:
        assert "http://" not in f.read_text() and "https://" not in f.read_text(), f
    assert '"@litertjs/wasm-utils": "./lib/wasm-utils/index.js"' in html
    for name in web.WASM_FILES:
        assert (tmp_path / "b" / "lib" / "wasm" / name).is_file()
    # a given .tflite is taken as it is
    single = web_export / "model_stream_float32.tflite"
    assert main([str(single), "--output", str(tmp_path / "c")]) == 0
    assert f"page model: {single}" in capsys.readouterr().err


def test_command_one_error_line_for_each_bad_input(web_export, tmp_path, capsys, monkeypatch):
    from kws_tf import cli, web
    from kws_tf.web.__main__ import main

    plain = tmp_path / "plain.tflite"
    plain.write_bytes(_strip_metadata((web_export / "model_stream_float32.tflite").read_bytes()))
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer at all" * 10)
    cases = {
        (str(plain), "--output", str(tmp_path / "o")): "is not a streaming model",
        (str(tmp_path / "junk.tflite"), "--output", str(tmp_path / "o")): "is not a TFLite file",
        (str(tmp_path), "--output", str(tmp_path / "o")): "has no model_stream_int8.tflite",
        (str(tmp_path / "nothing"), "--output", str(tmp_path / "o")): "no model at",
        (str(web_export),): "pass --output DIR",
    }
    for argv, words in cases.items():
        assert cli.run(main, list(argv)) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
    assert not (tmp_path / "o").exists()
    # without the JavaScript runtime: the one command that installs it
    monkeypatch.setattr(web, "LITERT", tmp_path / "nowhere")
    assert cli.run(main, [str(web_export), "--output", str(tmp_path / "o")]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: ") and f"`npm ci --prefix {web.HERE}`" in line


def test_server_serves_the_folder_with_wasm_and_module_types(site):
    folder, url = site
    with urllib.request.urlopen(url + "lib/wasm/litert_wasm_internal.wasm") as r:
        assert r.headers["Content-Type"] == "application/wasm"
        assert r.read(4) == b"\0asm"
    with urllib.request.urlopen(url + "app.js") as r:
        assert r.headers["Content-Type"] == "text/javascript"
    with urllib.request.urlopen(url) as r:
        assert b'<script type="importmap">' in r.read()


def test_serve_prints_the_url_serves_and_cleans_up(web_export, monkeypatch):
    """The README's command: --serve prints the URL on stdout and serves the page; when the
    server stops (Ctrl-C, or kill) its temporary folder is removed.  In a thread here, stopped
    through the server it made (a subprocess would spend seconds importing TensorFlow)."""
    import io
    import time

    from kws_tf import web
    from kws_tf.web import __main__ as command

    try:
        web.runtime_dir()
    except FileNotFoundError as e:
        _missing(str(e))
    made, result, out, err = [], [], io.StringIO(), io.StringIO()
    monkeypatch.setattr(command, "server", lambda *a, **k: made.append(web.server(*a, **k))
                        or made[-1])
    thread = threading.Thread(target=lambda: result.append(command.main(
        [str(web_export), "--serve", "--port", "0"], stdout=out, stderr=err)))
    thread.start()
    try:
        for _ in range(300):
            if out.getvalue().endswith("\n") or not thread.is_alive():
                break
            time.sleep(0.1)
        url = out.getvalue().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/"), (url, err.getvalue())
        with urllib.request.urlopen(url) as r:
            assert b"Talk to the keyword spotter" in r.read()
        with urllib.request.urlopen(url + "model.tflite") as r:
            assert r.read() == (web_export / "model_stream_int8.tflite").read_bytes()
    finally:
        if made:
            made[0].shutdown()
        thread.join(30)
    assert result == [0]
    folder = next(line.split()[1].rstrip(":") for line in err.getvalue().splitlines()
                  if line.startswith("wrote "))
    assert "kws-tf-web-" in folder and not os.path.exists(folder)
