"""python -m kws_tf.web MODEL_OR_EXPORT_FOLDER [--output DIR] [--serve] [--port N]

Writes a static page folder that runs a streaming spotter on the microphone in a browser
(LiteRT.js in WebAssembly; no CDN: it works offline) and, with --serve, serves it on
127.0.0.1 and prints the URL.  Open it, press Start and allow the microphone.

MODEL is a model_stream_*.tflite or an export folder (python -m kws_tf.export --streaming),
from which model_stream_int8.tflite is taken (--precision float32 for the other).  The page's
runtime is installed once with `npm ci --prefix kws_tf/web`.
"""
from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path

from .. import cli
from . import PRECISIONS, build_page, server


def _parser():
    p = cli.ArgumentParser(prog="python -m kws_tf.web", description=__doc__.split("\n\n")[1],
                                epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a model_stream_*.tflite, or an export folder holding them")
    p.add_argument("--output", default=None,
                   help="the page folder to write (replaced); default with --serve: a temporary "
                        "folder removed on exit")
    p.add_argument("--precision", choices=PRECISIONS, default="int8",
                   help="which file of an export folder (default int8)")
    p.add_argument("--serve", action="store_true", help="serve the folder on 127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="port for --serve (default 8000; 0: any)")
    return p


def main(argv=None, stdout=None, stderr=None) -> int:
    args = _parser().parse_args(argv)
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    if args.output is None and not args.serve:
        raise ValueError("pass --output DIR (or --serve to serve a temporary page)")
    with tempfile.TemporaryDirectory(prefix="kws-tf-web-") as tmp:
        out = Path(args.output) if args.output else Path(tmp) / "page"
        meta = build_page(args.model, out, args.precision,
                          note=lambda line: print(line, file=stderr, flush=True))
        print(f"wrote {out}: {len(meta['labels'])} labels, {meta['hop_seconds'] * 1000:g} ms "
              "packets", file=stderr, flush=True)
        if not args.serve:
            return 0
        # `kill` (SIGTERM) ends the server like Ctrl-C does: the temporary folder is removed
        if threading.current_thread() is threading.main_thread():  # only it may set handlers
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        httpd = server(out, args.port)
        host, port = httpd.server_address[:2]
        print(f"http://{host}:{port}/", file=stdout, flush=True)
        print("serving; Ctrl-C stops", file=stderr, flush=True)
        try:
            httpd.serve_forever()
        finally:
            httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
