"""Data layer: readers -> recordings -> windows -> features -> labels -> windowed data sets."""
