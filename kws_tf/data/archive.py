"""Download and unpack the official Speech Commands archive, resumably and atomically."""
from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Optional

from ..platform.progress import Progress
from .audio import DataError
from .splits import is_dataset


@dataclasses.dataclass(frozen=True)
class Archive:
    url: str
    size: Optional[int]  # bytes
    sha256: Optional[str]


# The official archives.  Size and SHA-256 as published by TensorFlow Datasets
# (tensorflow_datasets/url_checksums/speech_commands.txt); torchaudio's SPEECHCOMMANDS dataset
# pins the same SHA-256.
ARCHIVES = {
    "v0.02": Archive("http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
                     2_428_923_189,
                     "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"),
}


RETRY_WAIT_S = 2.0  # first wait before resuming a broken transfer; doubles each retry


def cache_dir() -> Path:
    """Where kws_tf keeps downloads and generated data: $KWS_TF_CACHE or ~/.cache/kws_tf."""
    if os.environ.get("KWS_TF_CACHE"):
        return Path(os.environ["KWS_TF_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "kws_tf"


def default_data_root(version: str = "v0.02") -> Path:
    """The full dataset's folder: $KWS_TF_DATA, else <cache>/speech_commands_<version>."""
    if os.environ.get("KWS_TF_DATA"):
        return Path(os.environ["KWS_TF_DATA"]).expanduser()
    return cache_dir() / f"speech_commands_{version}"


def download(dest=None, version: str = "v0.02", *, url: Optional[str] = None,
             size: Optional[int] = None, sha256: Optional[str] = None, progress: bool = True,
             retries: int = 3, keep_archive: bool = False) -> Path:
    """Download Speech Commands ``version`` and unpack it into ``dest``; return ``dest``.

    A no-op when ``dest`` already holds the dataset.  The archive is downloaded next to
    ``dest`` as ``<dest>.tar.gz.part``; an interrupted transfer resumes with an HTTP Range
    request (up to ``retries`` times per call, and on the next call), or restarts cleanly if
    the server ignores ranges.  Size and SHA-256 are verified (a bad archive is deleted), the
    files are extracted into a temporary folder beside ``dest`` and renamed into place only
    when complete.  ``url``/``size``/``sha256`` override the official archive (tests, mirrors);
    with a custom ``url`` and no ``sha256`` the checksum is not verified.
    """
    if version not in ARCHIVES:
        raise DataError(f"unknown Speech Commands version {version!r}; known: {', '.join(ARCHIVES)}")
    official = ARCHIVES[version]
    if url is None:
        url, size, sha256 = official.url, size or official.size, sha256 or official.sha256
    dest = Path(dest) if dest is not None else default_data_root(version)
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    if is_dataset(dest):
        say(f"Speech Commands {version} is already in {dest}")
        return dest
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(f"{dest} exists and is not a Speech Commands folder; choose another --dest")
    dest.parent.mkdir(parents=True, exist_ok=True)
    archive = dest.with_name(dest.name + ".tar.gz")
    if not archive.exists():  # kept from a run that verified it but could not extract
        part = dest.with_name(dest.name + ".tar.gz.part")
        say(f"downloading {url} -> {part}")
        _fetch(url, part, size, retries, progress)
        os.replace(part, archive)
    _verify(archive, url, size, sha256, say)
    _extract(archive, dest, say)
    if not keep_archive:
        archive.unlink()
    say(f"Speech Commands {version} is ready in {dest}")
    return dest


def _fetch(url: str, part: Path, size: Optional[int], retries: int, progress: bool) -> None:
    opener = urllib.request.build_opener()  # honours http(s)_proxy / no_proxy
    for attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have > size:  # not ours, or a changed file: start over
            part.unlink()
            have = 0
        if size is not None and have == size:
            return
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with opener.open(request, timeout=60) as resp:
                if have and resp.status != 206:  # the server ignored the range: clean restart
                    have = 0
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length is not None else size
                with open(part, "ab" if have else "wb") as f, Progress(total, "MB", have, progress, scale=1e6) as bar:
                    while chunk := resp.read(1 << 20):
                        f.write(chunk)
                        bar.update(len(chunk))
                got = part.stat().st_size
                if total is None or got >= total:
                    return
                error = f"connection closed at {got:,} of {total:,} bytes"
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # "range not satisfiable": nothing left to fetch
                if size is None:
                    return
                part.unlink()  # ... but our size is wrong: restart
                error = "server refused to resume"
            elif e.code >= 500 or e.code == 429:
                error = f"HTTP {e.code} {e.reason}"
            else:
                raise DataError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            error = str(getattr(e, "reason", None) or e) or type(e).__name__
        if attempt < retries:
            time.sleep(RETRY_WAIT_S * 2 ** attempt)
    got = part.stat().st_size if part.exists() else 0
    if not got:
        raise DataError(f"cannot download {url} ({error})")
    raise DataError(f"download of {url} interrupted at {got:,} bytes ({error}); run the same "
                    "command again to resume")


def _verify(archive: Path, url: str, size: Optional[int], sha256: Optional[str], say) -> None:
    got = archive.stat().st_size
    if size is not None and got != size:
        archive.unlink()
        raise DataError(f"{url}: downloaded {got:,} bytes, expected {size:,}; the file was deleted, "
                        "run the command again")
    if not sha256:
        say("no SHA-256 given: checksum not verified")
        return
    say("verifying SHA-256")
    h = hashlib.sha256()
    with open(archive, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    if h.hexdigest() != sha256.lower():
        archive.unlink()
        raise DataError(f"{url}: SHA-256 mismatch (got {h.hexdigest()}, expected {sha256}); the "
                        "download was deleted, run the command again")


def _extract(archive: Path, dest: Path, say) -> None:
    say(f"extracting into {dest}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extracting-", dir=dest.parent))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                if hasattr(tarfile, "data_filter"):  # refuses absolute paths, "..", devices
                    tar.extractall(tmp, filter="data")
                else:  # Python < 3.10.12: check the names ourselves
                    for m in tar.getmembers():
                        if m.name.startswith("/") or ".." in Path(m.name).parts or not (m.isfile() or m.isdir()):
                            raise tarfile.TarError(f"unsafe member {m.name!r}")
                    tar.extractall(tmp)
        except (tarfile.TarError, EOFError, zlib.error) as e:
            archive.unlink()
            raise DataError(f"{archive}: corrupt archive ({e}); it was deleted, run the command "
                            "again") from None
        except OSError as e:  # disk full, permissions: the archive itself is fine, keep it
            raise DataError(f"cannot extract {archive} into {dest.parent}: {e}") from None
        if not is_dataset(tmp):
            archive.unlink()
            raise DataError(f"{archive}: not a Speech Commands archive (no validation_list.txt / "
                            "testing_list.txt at its top level); it was deleted")
        if dest.exists():
            dest.rmdir()  # checked empty above
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
