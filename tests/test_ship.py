"""experiments.ship: the shipped folder's card figures and README table, from a card and a
streaming benchmark result (the export and evaluate steps are the commands' own tests')."""
import json
import sys

from conftest import REPO

sys.path.insert(0, str(REPO))
from experiments import ship  # noqa: E402


def _bench(tmp_path):
    words = {"yes": {"commands": 10, "hits": 7, "false_alarms": 1, "miss_rate": 0.3},
             "no": {"commands": 8, "hits": 2, "false_alarms": 0, "miss_rate": 0.75}}
    test = {"hit_rate": 0.5, "hits": 9, "commands": 18, "false_alarms": 3,
            "false_alarms_per_hour": 9.94, "delay_median_s": 1.2}
    model = {"testing_miss_rate_at": {"1": 0.9, "10": 0.5, "60": 0.2},
             "chosen_on_validation": {"threshold": 0.6, "average": 1.0, "suppression": 0.75},
             "own_decision": {"threshold": 0.64, "average": 1.0, "suppression": 0.75},
             "testing_own_decision": test, "testing_own_decision_by_word": words,
             "testing_by_background": {"by_level": {}, "false_alarms_by_kind": {"gap": 3},
                                       "by_word": {}}}
    result = {"command": "python -m benchmarks.streaming ...", "cpu": "AMD EPYC",
              "hop_s": 0.25, "tolerance_s": 2.0,
              "recordings": {"testing": {"hours": 0.3, "command_clips": 18}},
              "models": {"spotter": model}}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(result))
    return path


def test_card_figures_and_readme(tmp_path):
    s = ship.streaming_figures(_bench(tmp_path), "spotter")
    assert s["det_miss_rate_at_fa_per_hour"]["10"] == 0.5
    # the shipped settings on test, and per word with them (not the chosen-on-validation ones)
    assert s["shipped_decision_on_test"] == {"miss_rate": 0.5, "hits": 9, "commands": 18,
                                             "false_alarms": 3, "false_alarms_per_hour": 9.94,
                                             "delay_median_s": 1.2}
    assert s["per_word_on_test"]["no"]["miss_rate"] == 0.75
    card = {"variant": "gru4", "sample_rate": 8000, "labels": ["_silence_", "yes", "no"],
            "evaluation": {"split": "testing", "clips": 40},
            "exports": {"tflite_float32": {"path": "model_float32.tflite", "size_bytes": 3e6,
                                           "testing_accuracy": 0.9},
                        "keras_stream": {"path": "model_stream.keras", "size_bytes": 3e6,
                                         "shipped": False},
                        "tflite_stream_int8": {"path": "model_stream_int8.tflite",
                                               "size_bytes": 1e6, "testing_accuracy": 0.895,
                                               "micro": {"arena_bytes": 262144,
                                                         "flash_bytes": 1e6, "ops": ["ADD"]}}},
            "training": {"data": {"folder": "large", "training_clips": 6993},
                         "attribution": ship.ATTRIBUTION},
            "measured": {"clip_accuracy": {"accuracy": 0.906, "clips": 1372},
                         "per_word_clip_recall": {"yes": 0.94, "no": 0.91}, "streaming": s}}
    text = ship.readme("spotter", card)
    assert "**90.60 %**" in text and "miss rate at 10 false alarm(s) per hour (DET curve) | **50.0 %**" in text
    assert "50.0 % missed at 9.9 false alarms per hour" in text
    assert "| `model_float32.tflite` | 3.00 MB | 90.00 % |" in text
    assert "model_stream.keras" not in text  # dropped from the folder: no row
    assert "| no | 91.0 % | 75.0 % of 8 |" in text
    assert "a 256 kB tensor arena" in text and "CC-BY-4.0" in text
