"""Ship a trained spotter into ``saved_models/NAME/``: the files a user runs, and a model card
with every figure measured on it.

    python -m experiments.ship runs/words-large/model.keras --data ../speech_commands_large \\
        --name gru4-8k-words --streaming benchmarks/results/streaming-large-gru4-8k.json \\
        --streaming-model gru4-8k-words --command "python -m kws_tf.train gru4 ..."

What it does, in a scratch folder that replaces ``saved_models/NAME/`` only when complete:

1. ``python -m kws_tf.export MODEL --streaming --format tflite --quantize int8`` with the
   parity and accuracy checks on the whole test split (window and streaming files, float32 and
   int8; decision settings inside); the Keras streaming model is dropped (``export --streaming``
   rebuilds it from ``model.keras`` in seconds) to keep the folder small.
2. ``model.keras`` beside them (``predict`` and ``evaluate`` take it; ``export`` starts from it).
3. ``python -m kws_tf.evaluate`` on the test split: clip accuracy per word and the confusion
   matrix.
4. The streaming benchmark's figures for this model (``python -m benchmarks.streaming``'s JSON):
   the DET curve's miss rate at 1 / 10 / 60 false alarms per hour, the shipped decision
   settings on the test recordings, per-word miss rates, breakdowns.
5. ``model_card.json`` gains ``training`` (data, licence and attribution, recipe, command) and
   ``measured``; ``README.md`` shows them as a table.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: find kws_tf and experiments/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from kws_tf import artifacts, cli  # noqa: E402

ATTRIBUTION = ("Speech Commands clips (v0.02, and v0.01 for most of the extra clips of the large "
               "folder) by Google: Pete Warden, \"Speech Commands: A Dataset for "
               "Limited-Vocabulary Speech Recognition\", arXiv:1804.03209, CC-BY-4.0 "
               "(https://creativecommons.org/licenses/by/4.0/); the model is trained on them, "
               "no clip is shipped")
DROPPED = ("model_stream.keras",)


def run(cmd: list) -> None:
    print("$", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


def data_counts(data: Path) -> dict:
    from kws_tf.data import load_splits

    words, splits = load_splits(data)
    return {"folder": data.name, "words": len(words),
            **{f"{s}_clips": len(splits.get(s, [])) for s in ("training", "validation", "testing")}}


def streaming_figures(path: Path, key: str) -> dict:
    """The benchmark's figures for one model: what a user compares spotters by."""
    result = json.loads(path.read_text())
    m = result["models"][key]
    own = m.get("testing_own_decision")
    return {
        "source": str(path), "command": result.get("command"), "cpu": result.get("cpu"),
        "recordings": result["recordings"],
        "hop_s": result["hop_s"], "tolerance_s": result["tolerance_s"],
        "det_miss_rate_at_fa_per_hour": m["testing_miss_rate_at"],
        "det_averaging_and_suppression": {k: m["chosen_on_validation"][k]
                                          for k in ("average", "suppression")},
        "shipped_decision": m.get("own_decision"),
        "shipped_decision_on_test": _rates(own) if own else None,
        "per_word_on_test": m.get("testing_own_decision_by_word")
        or m["testing_by_background"].get("by_word"),
        "by_level": m["testing_by_background"]["by_level"],
        "false_alarms_by_kind": m["testing_by_background"]["false_alarms_by_kind"],
    }


def _rates(r: dict) -> dict:
    return {"miss_rate": round(1 - r["hit_rate"], 4), "hits": r["hits"],
            "commands": r["commands"], "false_alarms": r["false_alarms"],
            "false_alarms_per_hour": round(r["false_alarms_per_hour"], 2),
            "delay_median_s": r["delay_median_s"]}


def readme(name: str, card: dict) -> str:
    t, m = card["training"], card["measured"]
    split = card["evaluation"]["split"]
    rows = []
    for v in card["exports"].values():
        if "path" not in v or not v.get("shipped", True):
            continue
        acc = v.get(f"{split}_accuracy")
        rows.append(f"| `{v['path']}` | {v['size_bytes'] / 1e6:.2f} MB | "
                    + (f"{100 * acc:.2f} %" if acc is not None else "") + " |")
    s = m.get("streaming") or {}
    det = s.get("det_miss_rate_at_fa_per_hour", {})
    own = s.get("shipped_decision_on_test") or {}
    dec = s.get("shipped_decision") or {}
    per_word = s.get("per_word_on_test") or {}
    lines = [
        f"# `{name}`: a 12-label keyword spotter", "",
        f"{card['variant']} at {card['sample_rate']} Hz, labels {', '.join(card['labels'])}. "
        f"Trained on {t['data']['training_clips']:,} real Speech Commands clips "
        f"(`{t['data']['folder']}`; {t['attribution']}).", "",
        "| figure (test split, speakers never trained on) | value |", "|---|---|",
        f"| clip accuracy (Keras, {m['clip_accuracy']['clips']} clips) | "
        f"**{100 * m['clip_accuracy']['accuracy']:.2f} %** |",
    ]
    for k in ("1", "10", "60"):
        if det.get(k) is not None:
            lines.append(f"| miss rate at {k} false alarm(s) per hour (DET curve) | "
                         f"**{100 * det[k]:.1f} %** |")
    if own:
        lines.append(f"| shipped decision (threshold {dec.get('threshold')}, average "
                     f"{dec.get('average')} s, suppression {dec.get('suppression')} s) | "
                     f"{100 * own['miss_rate']:.1f} % missed at "
                     f"{own['false_alarms_per_hour']:.1f} false alarms per hour |")
    if s:
        lines.append(f"| test recordings | {s['recordings']['testing']['hours']:.2f} h, "
                     f"{s['recordings']['testing']['command_clips']} command words |")
    lines += ["", f"| file | size | {split} accuracy ({card['evaluation']['clips']} command-word "
              "clips: the export's checks) |", "|---|---|---|", *rows]
    if per_word:
        lines += ["", "Per word, on the test recordings with the shipped decision:", "",
                  "| word | clip accuracy (recall) | missed in recordings |", "|---|---|---|"]
        for w, row in per_word.items():
            recall = m["per_word_clip_recall"].get(w)
            lines.append(f"| {w} | {'' if recall is None else f'{100 * recall:.1f} %'} | "
                         f"{100 * row['miss_rate']:.1f} % of {row['commands']} |")
    return "\n".join(lines + _usage(name, card))


def _usage(name: str, card: dict) -> list:
    """The microcontroller figures and the commands that run the folder."""
    lines = []
    micro = card["exports"].get("tflite_stream_int8", {}).get("micro") or {}
    if micro.get("arena_bytes"):
        lines += ["", f"On a microcontroller (TensorFlow Lite for Microcontrollers' interpreter): "
                  f"`model_stream_int8.tflite` needs {micro['flash_bytes'] / 1e6:.2f} MB of flash "
                  f"and a {micro['arena_bytes'] / 1024:.0f} kB tensor arena; ops "
                  f"{', '.join(micro['ops'])}."]
    lines += ["", "```bash",
              "python -m kws_tf.detection.recordings ../speech_commands_large --output recording.wav"
              "   # a test-split recording",
              f"python -m kws_tf.listen saved_models/{name} recording.wav",
              f"arecord -q -f S16_LE -r 16000 -c 1 -t raw | python -m kws_tf.listen saved_models/{name} -",
              f"python -m kws_tf.predict saved_models/{name} clip.wav",
              f"python -m kws_tf.web saved_models/{name} --serve   # in a browser", "```", "",
              "How it was made and measured: `model_card.json` (`training`, `measured`), "
              "[docs/streaming.md](../../docs/streaming.md).", ""]
    return lines


def main(argv=None) -> int:
    p = cli.ArgumentParser(prog="python -m experiments.ship",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="model.keras of a run folder (config.json beside it)")
    p.add_argument("--data", type=Path, required=True, help="the dataset folder it was trained on")
    p.add_argument("--name", required=True, help="saved_models/NAME")
    p.add_argument("--output", type=Path, default=Path("saved_models"))
    p.add_argument("--streaming", type=Path, help="benchmarks.streaming JSON measuring this model")
    p.add_argument("--streaming-model", help="the model's key in that JSON (default --name)")
    p.add_argument("--command", help="the training command to record (default: config.json's)")
    args = p.parse_args(argv)

    run_dir = args.model.parent
    config = json.loads((run_dir / "config.json").read_text())

    def build(tmp: Path) -> None:
        py = sys.executable
        run([py, "-m", "kws_tf.export", args.model, "--streaming", "--format", "tflite",
             "--quantize", "int8", "--data", args.data, "--split", "testing", "--eval-clips", "0",
             "--output", tmp])
        for f in DROPPED:
            (tmp / f).unlink(missing_ok=True)
        shutil.copy2(args.model, tmp / "model.keras")
        run([py, "-m", "kws_tf.evaluate", args.model, "--data", args.data, "--split", "testing",
             "--output", tmp / "eval"])
        evaluation = json.loads((tmp / "eval" / "metrics.json").read_text())
        (tmp / "eval" / "confusion_matrix.png").replace(tmp / "confusion_matrix.png")
        shutil.rmtree(tmp / "eval")
        card = json.loads((tmp / "model_card.json").read_text())
        card["name"] = args.name
        for entry in card["exports"].values():
            if entry.get("path") in DROPPED:
                entry["shipped"] = False  # export --streaming rebuilds it from model.keras
        card["training"] = {
            "data": data_counts(args.data), "attribution": ATTRIBUTION,
            "command": args.command or " ".join(["python -m kws_tf.train"] + config["command"][1:]),
            "recipe": config.get("words_recipe", {}).get("recipe"),
            "fit_config": config.get("fit_config"), "words": config.get("words"),
        }
        card["measured"] = {
            "clip_accuracy": {"split": "testing", "accuracy": evaluation["accuracy"],
                              "clips": evaluation["clips"],
                              "clips_by_kind": evaluation.get("clips_by_kind")},
            "per_word_clip_recall": {w: r["recall"] for w, r in evaluation["per_class"].items()},
            "streaming": (streaming_figures(args.streaming, args.streaming_model or args.name)
                          if args.streaming else None),
        }
        artifacts.write_json(tmp / "model_card.json", card)
        artifacts.write_text(tmp / "README.md", readme(args.name, card))

    dest = args.output / args.name
    artifacts.atomic_dir(build, dest)
    artifacts.make_readable(dest)  # built private in a temporary folder; shipped for everyone
    print(f"wrote {dest}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
