"""Export for phones (the last layer of the pipeline; only ``kfusion.cli`` imports it).

- :mod:`~kfusion.export.raw_inputs`: :func:`raw_input_model`, a features-input model behind the
  in-graph feature layers of :mod:`kfusion.models.feature_layers` (MFCCs, per-window
  normalisation), so it takes raw sensor buffers.
- :mod:`~kfusion.export.tflite`: :func:`export_model` (SavedModel / TFLite, builtin ops only,
  float32 / float16 / dynamic / int8, JSON sidecar), :func:`export_variants`.
- :mod:`~kfusion.export.prediction`: :func:`load_predictor` (``.keras``, SavedModel, ``.tflite``
  alike), :func:`predict` (a per-window timeline CSV and plot), :class:`StreamingPredictor`.

Submodules import TensorFlow lazily where they can; import them directly
(``from kfusion.export.tflite import export_model``) or use the names below.
"""

from __future__ import annotations

_EXPORTS = {
    "raw_input_model": "raw_inputs", "raw_input_shapes": "raw_inputs",
    "export_model": "tflite", "export_variants": "tflite", "QUANTIZATIONS": "tflite",
    "FORMATS": "tflite", "UnsupportedOpsError": "tflite", "read_sidecar": "tflite",
    "sidecar_path": "tflite", "representative_inputs": "tflite",
    "Predictor": "prediction", "load_predictor": "prediction", "predict": "prediction",
    "StreamingPredictor": "prediction", "recording_windows": "prediction", "timeline": "prediction",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"kfusion.export.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'kfusion.export' has no attribute {name!r}")
