"""benchmarks/learning_curve.py: the folders of fewer training speakers, and its figure."""
import os

from benchmarks import learning_curve
from kws_tf.data import load_splits


def test_fraction_folder_keeps_a_share_of_training_speakers_and_every_held_out_clip(tiny_root, tmp_path):
    info = learning_curve.fraction_folder(tiny_root, tmp_path / "half", 0.5)
    words, splits = load_splits(tmp_path / "half")
    _, full = load_splits(tiny_root)
    assert words == load_splits(tiny_root)[0]
    assert info["speakers"] == 4 and info["training_clips"] == len(splits["training"]) == 12
    speakers = {rel.split("/")[1].split("_nohash_")[0] for rel in splits["training"]}
    assert len(speakers) == 4  # whole speakers: every word of a kept speaker, none of the others
    assert splits["validation"] == full["validation"] and splits["testing"] == full["testing"]
    rel = splits["training"][0]
    assert os.stat(tmp_path / "half" / rel).st_ino == os.stat(tiny_root / rel).st_ino
    assert (tmp_path / "half" / "_background_noise_" / "white_noise.wav").exists()


def test_plot_draws_every_point_that_trained(tmp_path):
    points = [{"training_clips": n, "validation_accuracy": a, "test_accuracy": a + 0.02,
               "validation_miss_rate_at_10_fa_per_hour": 1 - a / 2} for n, a in ((500, 0.5), (1000, 0.6))]
    learning_curve.plot(tmp_path / "c.png", points + [{"training_clips": 2000, "error": "x"}], "t")
    assert (tmp_path / "c.png").stat().st_size > 10_000
