"""Running a stream: the streaming model and its geometry (``model``, ``geometry``), one
runner over the formats that steps packets and feeds states back (``runner``), the audio
inputs (``audio``), the decision rule (``decision``) and window sliding (``windows``).
Nothing is imported here: ``runner``, ``audio``, ``decision`` and ``windows`` need only numpy
(and the LiteRT interpreter for ``.tflite`` files); ``model`` needs Keras."""
