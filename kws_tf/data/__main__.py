"""python -m kws_tf.data {download,synthetic,stats}: get, build and inspect Speech Commands data.

Examples:
  python -m kws_tf.data download                   # the full dataset (2.4 GB) into the cache
  python -m kws_tf.data synthetic                  # the embedded eSpeak NG set (--data synthetic)
  python -m kws_tf.data synthetic out/ --words yes,no,up --clips-per-word 10
  python -m kws_tf.data stats ../shared/data/speech_commands_subset
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter

from .. import cli


def parse_args(argv=None):
    from . import SYNTHETIC_DEFAULTS, default_data_root

    p = cli.ArgumentParser(prog="python -m kws_tf.data", description=cli.first_paragraph(__doc__),
                                epilog=__doc__.split("\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("download", help="download and unpack the official archive (resumable)",
                       description="Download speech_commands_v0.02.tar.gz, verify its size and "
                                   "SHA-256, and unpack it. Re-run to resume; a no-op when done.")
    d.add_argument("--dest", help=f"dataset folder (default {default_data_root()}, or $KWS_TF_DATA)")
    d.add_argument("--keep-archive", action="store_true", help="keep the .tar.gz after unpacking")
    d.add_argument("--quiet", action="store_true", help="no progress output")

    s = sub.add_parser("synthetic", help="build the embedded eSpeak NG dataset",
                       description="Write a small dataset of synthesized speech in the Speech "
                                   "Commands layout (no download needed).")
    s.add_argument("dest", nargs="?",
                   help="output folder (default: the cache folder that --data synthetic uses)")
    s.add_argument("--words", help="comma-separated words (default: the 35 Speech Commands words)")
    s.add_argument("--clips-per-word", type=int, default=SYNTHETIC_DEFAULTS["clips_per_word"],
                   help="speakers, one clip per word each (default %(default)s)")
    s.add_argument("--seed", type=int, default=SYNTHETIC_DEFAULTS["seed"])

    t = sub.add_parser("stats", help="clips and durations per split and word",
                       description="Count clips and durations per split and per word (from the "
                                   "WAV headers) and list unreadable files.")
    t.add_argument("data", nargs="?", default=None,
                   help="dataset folder or 'synthetic' (default: the downloaded dataset)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from . import SYNTHETIC_DEFAULTS, download, is_dataset, synthetic, synthetic_root

    if args.command == "download":
        try:
            download(args.dest, progress=not args.quiet, keep_archive=args.keep_archive)
        except KeyboardInterrupt:
            print("\ninterrupted: run the same command again to resume the download",
                  file=sys.stderr)
            return 130
    elif args.command == "synthetic":
        params = {**SYNTHETIC_DEFAULTS, "clips_per_word": args.clips_per_word, "seed": args.seed}
        if args.words:
            params["words"] = [w.strip() for w in args.words.split(",") if w.strip()]
        dest = args.dest or synthetic_root(**params)
        if args.dest is None and is_dataset(dest):
            print(f"already built: {dest}")
        else:
            print(f"wrote {synthetic(dest, **params)}")
    else:
        stats(args.data)
    return 0


def stats(data=None, out=None) -> None:
    """Print per-split and per-word clip counts and durations of a dataset folder."""
    from . import DataError, load_splits, resolve_data, wav_info

    out = out or sys.stdout
    root = resolve_data(data)
    labels, splits = load_splits(root)
    counts, bad = {}, {}
    print(f"{root}: {len(labels)} words", file=out)
    print(f"{'split':<11}{'clips':>7}{'hours':>8}{'mean s':>8}{'min s':>7}{'max s':>7}"
          f"{'< 1 s':>7}{'not 16k/16-bit/mono':>21}{'unreadable':>12}", file=out)
    for split, files in splits.items():
        seconds, other = [], 0
        counts[split] = Counter()
        for rel in files:
            try:
                info = wav_info(root / rel)
            except DataError as e:
                bad[rel] = str(e)
                continue
            seconds.append(info.seconds)
            other += not info.standard
            counts[split][rel.split("/", 1)[0]] += 1
        n = len(seconds)
        mean, lo, hi = (sum(seconds) / n, min(seconds), max(seconds)) if n else (0, 0, 0)
        print(f"{split:<11}{n:>7}{sum(seconds) / 3600:>8.2f}{mean:>8.2f}{lo:>7.2f}{hi:>7.2f}"
              f"{sum(s < 1 for s in seconds):>7}{other:>21}{len(files) - n:>12}", file=out)
    print(f"\n{'word':<12}" + "".join(f"{s:>12}" for s in splits), file=out)
    for word in labels:
        print(f"{word:<12}" + "".join(f"{counts[s][word]:>12}" for s in splits), file=out)
    for rel, reason in sorted(bad.items()):
        print(f"unreadable: {reason}", file=out)


if __name__ == "__main__":
    sys.exit(cli.run(main))
