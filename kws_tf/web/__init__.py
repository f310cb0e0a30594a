"""Talk to a streaming spotter in a browser: a static page that runs its ``.tflite`` with
LiteRT.js (WebAssembly) on the microphone, a packet at a time.

``build_page(model, output)`` writes a self-contained folder: ``index.html``, the page's ES
modules (``static/``), the streaming ``.tflite`` as ``model.tflite`` and LiteRT.js (its JS, its
WebAssembly files and ``@litertjs/wasm-utils``, found through an import map: no bundler, no
CDN).  The page reads the labels, rates, hop, states and decision settings from the file's own
``kws_tf`` metadata (the bytes it runs), so nothing is converted or copied beside it.

LiteRT.js is pinned in ``package.json`` / ``package-lock.json`` here and installed with
``npm ci --prefix kws_tf/web`` (``install_command()``); ``runtime_dir()`` finds it.
"""
from __future__ import annotations

import functools
import http.server
import shutil
from pathlib import Path
from typing import Callable, Optional

from .. import artifacts
from ..inference.tflite import read_metadata

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
LITERT = HERE / "node_modules" / "@litertjs"
# loadLiteRt picks litert_wasm_internal (browsers with relaxed SIMD) or the compat build; the
# threaded and JSPI builds are only loaded when asked for, so the page ships these two alone.
WASM_FILES = ("litert_wasm_internal.js", "litert_wasm_internal.wasm",
              "litert_wasm_compat_internal.js", "litert_wasm_compat_internal.wasm")
PRECISIONS = ("int8", "float32")
MODEL_NAME = "model.tflite"


def install_command() -> str:
    return f"npm ci --prefix {HERE}"


def runtime_dir() -> Path:
    """The installed ``@litertjs`` folder (``core`` and ``wasm-utils``), or one line saying how
    to install it."""
    needed = [LITERT / "core" / "dist" / "index.js", LITERT / "wasm-utils" / "dist" / "index.js",
              *(LITERT / "core" / "wasm" / f for f in WASM_FILES)]
    if not all(p.is_file() for p in needed):
        raise FileNotFoundError(f"LiteRT.js (the page's runtime) is not installed: run "
                                f"`{install_command()}`")
    return LITERT


def pick_model(path, precision: str = "int8") -> tuple:
    """``(tflite path, line)``: ``path`` itself if it is a file, else the export folder's
    ``model_stream_<precision>.tflite``; ``line`` says which was taken."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision}")
    path = Path(path)
    if path.is_dir():
        chosen = path / f"model_stream_{precision}.tflite"
        if not chosen.is_file():
            found = sorted(p.name for p in path.glob("model_stream_*.tflite"))
            raise FileNotFoundError(
                f"{path} has no {chosen.name}" + (f" (it has {', '.join(found)})" if found else
                                                  ": export it with python -m kws_tf.export "
                                                  "--streaming"))
        return chosen, f"page model: {chosen} ({precision}; --precision picks the other)"
    if not path.is_file():
        raise FileNotFoundError(f"no model at {path}")
    if path.suffix != ".tflite":
        raise ValueError(f"{path}: the page runs a streaming .tflite (model_stream_*.tflite) or "
                         "an export folder holding one")
    return path, f"page model: {path}"


def stream_metadata(path) -> dict:
    """The file's ``kws_tf`` streaming metadata; a ValueError naming the file if it has none
    (a window model, another program's file, not a TFLite flatbuffer at all)."""
    try:
        meta = read_metadata(path)
    except Exception:  # the flatbuffer reader raises anything on bytes that are not one
        raise ValueError(f"{path} is not a TFLite file") from None
    if not (isinstance(meta, dict) and meta.get("format") == "kws_tf.streaming"
            and meta.get("states")):
        raise ValueError(f"{path} is not a streaming model (no kws_tf metadata with states): "
                         "the page runs a model_stream_*.tflite from python -m kws_tf.export "
                         "--streaming")
    return meta


def build_page(model, output, precision: str = "int8",
               note: Optional[Callable[[str], None]] = None) -> dict:
    """Write the page folder ``output`` (replaced as a whole, atomically); return the model's
    metadata plus ``model_path``."""
    path, line = pick_model(model, precision)
    meta = stream_metadata(path)
    runtime = runtime_dir()
    if note:
        note(line)

    def build(tmp: Path) -> None:
        shutil.copytree(STATIC, tmp, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copyfile(path, tmp / MODEL_NAME)
        lib = tmp / "lib"
        shutil.copytree(runtime / "core" / "dist", lib / "core", ignore=_only("index.js"))
        shutil.copytree(runtime / "wasm-utils" / "dist", lib / "wasm-utils",
                        ignore=_only("index.js"))
        (lib / "wasm").mkdir()
        for name in WASM_FILES:
            shutil.copyfile(runtime / "core" / "wasm" / name, lib / "wasm" / name)
        artifacts.make_readable(tmp)

    artifacts.atomic_dir(build, Path(output))
    return {**meta, "model_path": str(path)}


def _only(*keep):
    return lambda folder, names: [n for n in names if n not in keep]


class _Handler(http.server.SimpleHTTPRequestHandler):
    # WebAssembly.instantiateStreaming needs application/wasm; modules need a JS type
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript",
                      ".tflite": "application/octet-stream"}

    def end_headers(self):
        # cross-origin isolation (everything is same-origin, so nothing breaks): the page's
        # performance.now() then ticks in microseconds, not the 100 us of other pages
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def log_message(self, format, *args):  # quiet: the command prints the URL, not each GET
        pass


def server(folder, port: int = 8000, host: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
    """An HTTP server of ``folder`` on ``host:port`` (port 0: any free one); not started."""
    handler = functools.partial(_Handler, directory=str(folder))
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise ValueError(f"cannot serve on {host}:{port} ({e.strerror}); pick another --port") \
            from None
