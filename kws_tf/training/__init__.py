"""Training: the one fit path (``fit``) that ``kws_tf.train``, ``experiments/reproduce.py`` and
the tuner share, with its config, data batches, callbacks, run folders, tf.distribute and
command-line flags in the modules beside this one."""
from ..errors import TrainingError
from ..metrics import classification_metrics, evaluate_arrays, predict_scores
from .batches import SplitArrays, TrainingData, epoch_order, load_training_data, train_batches
from .config import FitConfig, Run
from .fit_loop import compile_model, fit, make_optimizer
from .run_folder import check_output_dir, default_output

__all__ = ["FitConfig", "Run", "SplitArrays", "TrainingData", "TrainingError", "check_output_dir",
           "classification_metrics", "compile_model", "default_output", "epoch_order",
           "evaluate_arrays", "fit", "load_training_data", "make_optimizer", "predict_scores",
           "train_batches"]
