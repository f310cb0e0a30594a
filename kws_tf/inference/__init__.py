"""Running trained models on whole clips: scorers over the three formats, the one TFLite
wrapper (window and streaming files) and which file of an export folder to run.  Streams run
in ``kws_tf.streaming``; what measures detection is in ``kws_tf.detection``."""
