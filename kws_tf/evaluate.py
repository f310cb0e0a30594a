"""python -m kws_tf.evaluate MODEL --data PATH: accuracy, loss and per-class table of a model."""
from __future__ import annotations

import sys
from pathlib import Path

from . import cli


def main(argv=None) -> int:
    p = cli.ArgumentParser(prog="python -m kws_tf.evaluate", description=__doc__)
    p.add_argument("model", help="a model.keras written by kws_tf.train, or a folder holding "
                                 "one (a run or export folder)")
    cli.add_data_args(p)
    p.add_argument("--split", default="testing", choices=("training", "validation", "testing"),
                   help="the split to score (default testing)")
    p.add_argument("--output", metavar="FOLDER",
                   help="also write metrics.json and confusion_matrix.png into FOLDER (made if "
                        "missing; default: print only, write nothing)")
    p.add_argument("--batch-size", type=int, default=100,
                   help="clips per forward pass; changes speed and memory, not the result "
                        "(default 100)")
    p.add_argument("--all-unknown", action="store_true",
                   help="a model with _unknown_: score every clip of the words it lacks (default: "
                        "the fixed 10%% sample its training used for validation and testing)")
    args = p.parse_args(argv)

    from . import artifacts, reports
    from .data import open_decoded, resolve_data
    from .metrics import classification_metrics, predict_scores

    if args.output:  # before anything is computed: a bad folder fails in one line, at once
        artifacts.check_output_folder(args.output)

    from .inference.resolve import resolve_model

    args.model = resolve_model(args.model, "evaluate",
                               lambda line: print(line, file=sys.stderr, flush=True))
    model, info = artifacts.load_model(args.model, compile=False)
    root = resolve_data(args.data)
    # Only the split scored needs clips: a folder of test recordings alone is enough.  Batches
    # are resampled to the model's own rate as they are read (8 kHz: the study's resampler).
    data = open_decoded(root, cache_dir=args.cache_dir, on_error=args.on_error,
                        needs=(args.split,), purpose=f"evaluate --split {args.split}")
    split, y, kinds = task_view(data, args.split, info["labels"], args.all_unknown)
    note = unscored_labels(data, args.split, info["labels"], y)
    if note:
        print(note, file=sys.stderr)
    metrics = classification_metrics(predict_scores(model, split, args.batch_size), y,
                                     info["labels"])
    print(reports.per_class_table(metrics))
    extra = "" if kinds["unknown"] == kinds["silence"] == 0 else \
        f": {kinds['words']} words, {kinds['unknown']} unknown, {kinds['silence']} silence"
    print(f"{args.split}: accuracy {metrics['accuracy']:.4f}  loss {metrics['loss']:.4f}  "
          f"({metrics['clips']} clips{extra}, {info['sample_rate']} Hz model)")
    if args.output:
        out = Path(args.output)
        artifacts.write_json(out / "metrics.json", {"model": str(args.model), "data": str(root),
                                                    "split": args.split, "clips_by_kind": kinds,
                                                    **metrics})
        reports.plot_confusion(out / "confusion_matrix.png", metrics["confusion"],
                               info["labels"], f"{Path(args.model).name}, {args.split} split")
        print(f"wrote {out / 'metrics.json'} and {out / 'confusion_matrix.png'}")
    return 0


def task_view(data, split_name: str, model_labels, all_unknown: bool = False):
    """The split as the model's task: ``(split, labels in the model's order, clips_by_kind)``.

    A model with ``_unknown_`` gets the words it lacks as ``_unknown_`` and one with
    ``_silence_`` gets silence clips from ``_background_noise_``, in the fixed amounts of its
    validation and test sets (kws_tf.data.tasks); a model with neither needs every word of the
    data to be one of its labels.
    """
    import numpy as np

    from .data.tasks import SILENCE, UNKNOWN, background_noise, task_split

    split = data[split_name]
    model_labels = list(model_labels)
    if SILENCE not in model_labels and UNKNOWN not in model_labels:
        missing = sorted(set(data.labels) - set(model_labels))
        if missing:
            raise ValueError(f"{data.root}: the data has words the model does not know: "
                             f"{_shown(missing)} (the model's {len(model_labels)} labels have no "
                             f"{UNKNOWN} to score them as)")
        # Map the dataset's label indices onto the model's label order by name.
        remap = np.array([model_labels.index(w) for w in data.labels], np.int64)
        y = remap[np.asarray(split.labels, np.int64)]
        return split, y, {"words": int(len(y)), "unknown": 0, "silence": 0}
    # Silence clips are cut from _background_noise_: without that folder there are none to score.
    silence = 10.0 if background_noise(str(data.root)) else 0.0
    view = task_split(split, split_name, data.labels, model_labels, data.root, per_epoch=False,
                      silence_percentage=silence, all_unknown=all_unknown)
    return view, view.labels, view.kinds


def unscored_labels(data, split_name: str, model_labels, y) -> str:
    """One line naming the model's labels that no clip of the split has ("" if none), and why.

    A 35-word model on a folder of 12 words scores those 12 (the other labels can still be
    predicted, so they still count as errors); a 12-label model on a folder without
    ``_background_noise_`` has no silence clip to score.
    """
    import numpy as np

    from .data.splits import NOISE_FOLDER
    from .data.tasks import SILENCE, UNKNOWN

    support = np.bincount(np.asarray(y, np.int64), minlength=len(model_labels))
    empty = [w for w, n in zip(model_labels, support) if n == 0]
    if not empty:
        return ""
    why = {SILENCE: f"{SILENCE} (no {NOISE_FOLDER} recording of 1 s or more)",
           UNKNOWN: f"{UNKNOWN} (every word of the data is one of the model's)"}
    special = [why[w] for w in empty if w in why]
    words = [w for w in empty if w not in why]
    parts = special + ([f"{len(words)} word(s) with no clip: {_shown(words)}"] if words else [])
    return (f"note: {len(empty)} of the model's {len(model_labels)} labels have no clip in the "
            f"{split_name} split of {data.root}: {'; '.join(parts)}; scoring the {int(len(y))} "
            "clips of the others (every label can still be predicted)")


def _shown(items, n: int = 3) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


if __name__ == "__main__":
    sys.exit(cli.run(main))
