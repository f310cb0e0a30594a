"""kws_tf.data.download end to end against a local HTTP server serving a small archive."""
import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from conftest import wav_bytes
from kws_tf import data as kdata
from kws_tf.data import DataError
from kws_tf.data import archive as download_module


def _archive() -> bytes:
    """A tar.gz in the official layout: entries at the top level, prefixed with "./"."""
    rng = np.random.default_rng(0)
    files = {"validation_list.txt": b"yes/b_nohash_0.wav\n", "testing_list.txt": b"no/b_nohash_0.wav\n",
             "LICENSE": b"CC-BY-4.0\n"}
    for word in ("yes", "no"):
        for speaker in ("a", "b", "c"):
            files[f"{word}/{speaker}_nohash_0.wav"] = wav_bytes(rng.normal(0, 0.1, 16000))
    files["_background_noise_/white_noise.wav"] = wav_bytes(rng.normal(0, 0.1, 32000))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


ARCHIVE = _archive()
SHA = hashlib.sha256(ARCHIVE).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Serves server.payload with Range support; can cut a response short or ignore ranges."""

    def do_GET(self):
        srv = self.server
        srv.ranges.append(self.headers.get("Range"))
        body, start = srv.payload, 0
        if self.headers.get("Range") and srv.honor_range:
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if srv.cuts:  # send part of the body, then drop the connection
            self.wfile.write(body[start:start + srv.cuts.pop(0)])
            return
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture()
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(download_module, "RETRY_WAIT_S", 0.0)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.payload, srv.ranges, srv.cuts, srv.honor_range = ARCHIVE, [], [], True
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/speech_commands_v0.02.tar.gz"
    yield srv
    srv.shutdown()
    srv.server_close()


def _get(srv, dest, **kw):
    kw = {"url": srv.url, "size": len(ARCHIVE), "sha256": SHA, "progress": False, "retries": 0, **kw}
    return kdata.download(dest, **kw)


def _leftovers(folder, dest):
    return sorted(p.name for p in folder.iterdir() if p.name != dest.name)


def test_resumes_an_interrupted_transfer_and_second_call_is_a_noop(server, tmp_path):
    dest = tmp_path / "speech_commands_v0.02"
    half = len(ARCHIVE) // 2
    server.cuts = [half]
    with pytest.raises(DataError, match="interrupted .*run the same command again to resume"):
        _get(server, dest)
    assert (tmp_path / "speech_commands_v0.02.tar.gz.part").stat().st_size == half
    assert not dest.exists()

    assert _get(server, dest) == dest
    assert server.ranges == [None, f"bytes={half}-"]
    labels, splits = kdata.load_splits(dest)
    assert labels == ["no", "yes"] and splits["validation"] == ["yes/b_nohash_0.wav"]
    assert (dest / "_background_noise_" / "white_noise.wav").is_file()
    assert _leftovers(tmp_path, dest) == []  # no .part, archive or temporary folder left

    assert _get(server, dest) == dest
    assert len(server.ranges) == 2  # nothing fetched the second time


def test_retries_within_one_call(server, tmp_path):
    server.cuts = [1000, 5000]
    dest = _get(server, tmp_path / "sc", retries=2)
    assert server.ranges == [None, "bytes=1000-", "bytes=6000-"]
    assert kdata.is_dataset(dest)


def test_restarts_cleanly_when_the_server_ignores_ranges(server, tmp_path):
    server.honor_range = False
    (tmp_path / "sc.tar.gz.part").write_bytes(b"\0" * 1234)  # from an earlier, different attempt
    dest = _get(server, tmp_path / "sc")
    assert server.ranges == ["bytes=1234-"]
    assert kdata.load_splits(dest)[0] == ["no", "yes"]


def test_wrong_checksum_deletes_the_download(server, tmp_path):
    dest = tmp_path / "sc"
    with pytest.raises(DataError, match="SHA-256 mismatch .*deleted"):
        _get(server, dest, sha256="0" * 64)
    assert not dest.exists() and _leftovers(tmp_path, dest) == []


def test_wrong_size_deletes_the_download(server, tmp_path):
    dest = tmp_path / "sc"
    with pytest.raises(DataError, match=f"downloaded {len(ARCHIVE):,} bytes, expected"):
        _get(server, dest, size=len(ARCHIVE) + 1, sha256=None)
    assert not dest.exists() and _leftovers(tmp_path, dest) == []


def test_corrupt_archive_leaves_no_half_extracted_dataset(server, tmp_path):
    server.payload = ARCHIVE[: len(ARCHIVE) * 2 // 3]  # checksum matches, gzip stream is cut
    dest = tmp_path / "sc"
    with pytest.raises(DataError, match="corrupt archive"):
        _get(server, dest, size=len(server.payload), sha256=hashlib.sha256(server.payload).hexdigest())
    assert not dest.exists() and _leftovers(tmp_path, dest) == []


def test_refuses_a_folder_that_is_not_a_dataset(server, tmp_path):
    (tmp_path / "sc").mkdir()
    (tmp_path / "sc" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="exists and is not a Speech Commands folder"):
        _get(server, tmp_path / "sc")
    assert server.ranges == []


def test_official_archive_constant():
    archive = kdata.ARCHIVES["v0.02"]
    assert archive.url == "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
    assert archive.size == 2_428_923_189 and len(archive.sha256) == 64
