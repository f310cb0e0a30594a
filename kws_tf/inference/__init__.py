"""Running trained models: scorers over the three formats, the TFLite runner, streaming models and
keyword detection over long recordings."""
