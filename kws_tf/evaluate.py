"""python -m kws_tf.evaluate MODEL --data PATH: accuracy, loss and per-class table of a model."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import cli


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m kws_tf.evaluate", description=__doc__)
    p.add_argument("model", help="a model.keras written by kws_tf.train")
    cli.add_data_args(p)
    p.add_argument("--split", default="testing", choices=("training", "validation", "testing"))
    p.add_argument("--output", help="folder for metrics.json and confusion_matrix.png")
    p.add_argument("--batch-size", type=int, default=100)
    args = p.parse_args(argv)

    from . import artifacts, reports
    from .data import resolve_data
    from .training import classification_metrics, load_training_data, predict_scores

    model, info = artifacts.load_model(args.model, compile=False)
    root = resolve_data(args.data)
    # Decode the data at the model's own rate (8 kHz models get the study's resampler).
    data = load_training_data(root, info["sample_rate"], splits=(args.split,),
                              on_error=args.on_error, cache_dir=args.cache_dir)
    split = data[args.split]
    # Map the dataset's label indices onto the model's label order by name.
    missing = sorted(set(data.labels) - set(info["labels"]))
    if missing:
        raise ValueError(f"the data has words the model does not know: {', '.join(missing)}")
    remap = [info["labels"].index(w) for w in data.labels]
    y = [remap[i] for i in split.labels]
    metrics = classification_metrics(predict_scores(model, split, args.batch_size), y,
                                     info["labels"])
    print(reports.per_class_table(metrics))
    print(f"{args.split}: accuracy {metrics['accuracy']:.4f}  loss {metrics['loss']:.4f}  "
          f"({metrics['clips']} clips, {info['sample_rate']} Hz model)")
    if args.output:
        out = Path(args.output)
        artifacts.write_json(out / "metrics.json", {"model": str(args.model), "data": str(root),
                                                    "split": args.split, **metrics})
        reports.plot_confusion(out / "confusion_matrix.png", metrics["confusion"],
                               info["labels"], f"{Path(args.model).name}, {args.split} split")
        print(f"wrote {out / 'metrics.json'} and {out / 'confusion_matrix.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
