"""Keyword detection measured as the field does: long recordings built from a split's clips
(``recordings``), a detector's hits and false alarms over them, the miss rate at N false alarms
per hour and its DET curve (``scoring``), and the decision settings chosen for one model on its
validation recordings (``choose``)."""
