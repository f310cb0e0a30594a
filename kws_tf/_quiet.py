"""Import Keras without TensorFlow's native start-up lines (kept out of keras-free code)."""
import os
import sys


def import_keras_quietly() -> None:
    """Import keras/TensorFlow with native stderr muted.

    TensorFlow's C++ side prints CUDA-probing lines at import, before absl logging is set up,
    so TF_CPP_MIN_LOG_LEVEL cannot hide them; on a CPU machine they are noise in front of every
    command.  Python exceptions are unaffected.  TF_CPP_MIN_LOG_LEVEL below 3 keeps them.
    """
    if "keras" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") != "3":
        import keras  # noqa: F401
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
