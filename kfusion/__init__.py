"""kfusion: self-supervised fusion of speech and wearable signals for emotion recognition.

The package follows the pipeline: ``kfusion.data`` (readers, windows, features, labels,
data sets) -> ``kfusion.models`` -> ``kfusion.training`` -> ``kfusion.evaluation`` ->
``kfusion.export``. Importing ``kfusion`` itself is cheap (no TensorFlow).
"""

__version__ = "0.1.0"
