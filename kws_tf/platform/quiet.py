"""Import Keras without TensorFlow's native start-up lines (kept out of keras-free code)."""
import contextlib
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


@contextlib.contextmanager
def native_output_muted():
    """Mute C++ prints on stdout/stderr (the TFLite converter's calibration lines).

    Python exceptions still carry the converter's messages.  TF_CPP_MIN_LOG_LEVEL below 3
    keeps the native lines, for debugging.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") != "3":
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)
