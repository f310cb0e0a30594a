"""The study's recipes trained in PyTorch, the original code's way: the reproduction table's
PyTorch column (``python -m experiments.reproduce --torch-reference``).

    python -m benchmarks.torch_recipe gru4 --sample-rate 8000 \\
        --data ../shared/data/speech_commands_subset --output runs/torch-gru4-8k

Same splits as ours (the decoded cache of the same folder), the architecture of
``benchmarks/torch_reference.py`` with PyTorch's own initialisation, a ``DataLoader``-style
reshuffle every epoch from ``torch.manual_seed(seed)`` (the last batch kept partial), 8 kHz
models resampling each 16 kHz batch inside the model with torchaudio's kernel (as the study
did), the recipe's optimizer (SGD with coupled weight decay, Adam with eps 1e-8) and StepLR
stepped per epoch.  The weights of the epoch with the lowest validation loss are evaluated on
the validation and test splits, like ours.  Writes ``metrics.json``, ``history.csv`` and
``batch_losses.json`` into the output folder; ``metrics.json`` comes last, so a folder with one
is finished.
"""
from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from kws_tf import cli

EVAL_BATCH = 200


def _batches(audio, labels, order, batch):
    import torch

    for i in range(0, len(order), batch):
        rows = order[i:i + batch]
        x = torch.from_numpy(np.asarray(audio[rows], np.float32) / 32768.0)
        yield x, torch.from_numpy(np.asarray(labels[rows], np.int64))


def _evaluate(model, loss_fn, audio, labels) -> dict:
    import torch

    model.eval()
    total, correct = 0.0, 0
    with torch.no_grad():
        for x, y in _batches(audio, labels, np.arange(len(labels)), EVAL_BATCH):
            out = model(x)
            total += float(loss_fn(out, y)) * len(y)
            correct += int((out.argmax(-1) == y).sum())
    n = max(len(labels), 1)
    return {"accuracy": correct / n, "loss": total / n, "clips": int(len(labels))}


def make_optimizer(model, v):
    import torch

    if v.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), v.learning_rate, weight_decay=v.weight_decay)
    elif v.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), v.learning_rate)  # eps 1e-8: the default
    else:
        raise ValueError(f"unknown optimizer {v.optimizer!r}")
    sched = (torch.optim.lr_scheduler.StepLR(opt, v.lr_step_epochs, v.lr_gamma)
             if v.lr_step_epochs else None)
    return opt, sched


def train_cell(variant, sample_rate: int, data_root, output, seed: int = 0, epochs=None,
               cache_dir=None, log=print, init: str = "torch") -> dict:
    """Train one cell with the variant's recipe (``epochs`` overrides its epoch count).

    ``init="keras"`` starts from the weights ``kws_tf.build_model`` draws at ``seed`` (our
    initialisation, copied in) instead of PyTorch's own: the rest is PyTorch's, so a cell that
    moves towards ours with it differs by its initialisation."""
    import torch

    from kws_tf import artifacts
    from kws_tf.training import load_training_data
    from kws_tf.variants import get_variant

    from .torch_reference import TorchKWS

    if init not in ("torch", "keras"):
        raise ValueError(f"init must be 'torch' or 'keras', got {init!r}")
    v = get_variant(variant)
    epochs = int(epochs or v.epochs)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    data = load_training_data(data_root, 16000, cache_dir=cache_dir, verbose=False)
    splits = {s: (np.asarray(data[s].audio), np.asarray(data[s].labels)) for s in data.splits
              if len(data[s].labels)}
    torch.manual_seed(seed)
    model = TorchKWS(v, sample_rate, num_classes=len(data.labels),
                     input_rate=16000 if sample_rate != 16000 else None)
    if init == "keras":
        _copy_keras_init(model, v, sample_rate, len(data.labels), seed)
    history, batch_losses, best, train_seconds = _fit_epochs(model, v, splits, epochs, seed, log)
    loss_fn, n_train = model.loss_fn(), len(splits["training"][1])
    model.load_state_dict(best[2])
    metrics = {"framework": "pytorch", "init": init, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "variant": v.name, "sample_rate": sample_rate, "seed": seed, "epochs_planned": epochs,
               "epochs_run": len(history), "best_epoch": best[0],
               "train_seconds": round(train_seconds, 1),
               "train_clips_per_second": round(n_train * len(history) / train_seconds, 1),
               "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
               "data": str(data_root), "steps_per_epoch": math.ceil(n_train / v.batch_size)}
    for split in ("validation", "testing"):
        if split in splits:
            metrics[split] = _evaluate(model, loss_fn, *splits[split])
    artifacts.write_text(output / "history.csv", _csv(history))
    artifacts.write_text(output / "batch_losses.json", json.dumps([round(x, 5) for x in batch_losses]))
    artifacts.write_json(output / "metrics.json", metrics)  # last: the cell is done
    return metrics


def _copy_keras_init(model, v, sample_rate: int, num_classes: int, seed: int) -> None:
    import keras

    from kws_tf.models import build_model

    from .torch_reference import copy_from_keras

    keras.utils.set_random_seed(seed)  # as kws_tf.training.fit does before it builds
    copy_from_keras(model, build_model(v, sample_rate, num_classes=num_classes))


def _fit_epochs(model, v, splits, epochs: int, seed: int, log):
    """The recipe's epochs: per-batch losses, per-epoch validation, the best epoch's weights."""
    import torch

    loss_fn, (opt, sched) = model.loss_fn(), make_optimizer(model, v)
    gen = torch.Generator().manual_seed(seed)
    history, batch_losses, best, train_seconds = [], [], None, 0.0
    audio, labels = splits["training"]
    for epoch in range(epochs):
        lr = opt.param_groups[0]["lr"]
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(labels), generator=gen).numpy()
        for x, y in _batches(audio, labels, order, v.batch_size):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            batch_losses.append(loss.item())
        seconds = time.perf_counter() - start
        train_seconds += seconds
        if not math.isfinite(batch_losses[-1]):
            raise RuntimeError(f"{v.name}: loss {batch_losses[-1]} in epoch {epoch + 1}")
        val = _evaluate(model, loss_fn, *splits["validation"])
        if sched:
            sched.step()
        history.append({"epoch": epoch + 1, "val_loss": val["loss"], "val_accuracy": val["accuracy"],
                        "lr": lr, "seconds": round(seconds, 2)})
        if best is None or val["loss"] < best[1]:
            best = (epoch + 1, val["loss"], copy.deepcopy(model.state_dict()))
        log(f"  torch {v.name} epoch {epoch + 1}/{epochs}: val_loss {val['loss']:.4f} "
            f"val_accuracy {val['accuracy']:.4f} ({len(labels) / seconds:.0f} clips/s)")
    return history, batch_losses, best, train_seconds


def _csv(rows) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def main(argv=None) -> int:
    ap = cli.ArgumentParser(prog="python -m benchmarks.torch_recipe", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variant")
    ap.add_argument("--sample-rate", type=int, default=16000, choices=(16000, 8000))
    ap.add_argument("--data", required=True, help="dataset folder (Speech Commands layout)")
    ap.add_argument("--output", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="default: the variant's recipe")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--init", choices=("torch", "keras"), default="torch",
                    help="initial weights: PyTorch's own (default) or kws_tf.build_model's at "
                         "--seed, copied in (isolates the initialisation from the rest)")
    args = ap.parse_args(argv)
    m = train_cell(args.variant, args.sample_rate, args.data, args.output, args.seed,
                   args.epochs, args.cache_dir, init=args.init)
    print(json.dumps({k: m[k] for k in ("variant", "sample_rate", "best_epoch") if k in m}
                     | {s: m[s]["accuracy"] for s in ("validation", "testing") if s in m}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
