"""Artefacts shared by the export, front-end and prediction tests, built once per pytest
process (training and TFLite conversion take seconds each): a small five-modality attention
model trained on the shared synthetic set, its raw windows, and its exported variants."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kfusion.modalities import MODALITIES

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Variants exported from the trained model: (raw_inputs, quantization).
FEATURE_VARIANTS = ("none", "float16", "int8")
RAW_VARIANTS = ("none", "int8")

_CACHE: dict = {}


def small_emotion_model(mechanism: str = "attention", modalities=MODALITIES, targets=None,
                        seed: int = 0, levels: int = 0):
    """A fusion emotion model with the real input shapes (speech [400, 40], E4 4 s windows)
    but small encoders (two SigRep blocks) and heads, so it traces, trains and converts in
    seconds."""
    import keras

    from kfusion.models import emotion_model, fusion_backbone, sigrep_encoder, speech_autoencoder

    keras.utils.set_random_seed(seed)
    encoders = {}
    for m in modalities:
        if m == "speech":
            encoders[m] = speech_autoencoder((400, 40), code_dim=16, filters=(8, 8, 8, 8))[1]
        else:
            encoders[m] = sigrep_encoder(m, blocks=2, embedding_dim=16)
    backbone = fusion_backbone(encoders, mechanism, projection_units=(32, 16), attention_tokens=4)
    return emotion_model(backbone, targets, units=(16,), levels=levels)


def save_with_classes(model, path, classes) -> Path:
    """``model.save(path)`` plus the part of a ``kfusion train`` sidecar that export and predict
    read: the data set's class names per output (they are never guessed from target names)."""
    import json

    from kfusion.evaluation.deploy import SIDECAR_FORMAT, SIDECAR_KIND, model_sidecar_path

    model.save(path)
    outputs = [{"name": t, "classes": [str(c) for c in names]} for t, names in classes.items()]
    model_sidecar_path(path).write_text(json.dumps({"kind": SIDECAR_KIND, "format": SIDECAR_FORMAT,
                                                    "outputs": outputs}))
    return Path(path)


def model_inputs(dataset):
    """Model inputs (features + presence) of a WindowedDataset."""
    from kfusion.models import presence_array

    return {**dataset.inputs, "presence": presence_array(dataset.presence, dataset.modalities)}


@dataclass
class Trained:
    model: object
    keras_path: Path
    dataset: object                 # every window of the synthetic set (WindowedDataset)
    windows: list                   # the same windows, raw (RecordingWindows per participant)
    folder: Path
    variants: dict = field(default_factory=dict)   # (raw_inputs, quantization) -> path

    def raw_inputs(self) -> dict:
        from kfusion.models import presence_array

        raw = {m: np.concatenate([w.raw[m] for w in self.windows]) for m in MODALITIES}
        presence = {m: np.concatenate([w.presence[m] for w in self.windows]) for m in MODALITIES}
        raw["presence"] = presence_array(presence, MODALITIES)
        return raw


def trained_synthetic(tmp_path_factory, synth_root) -> Trained:
    """The trained model, its data and its TFLite variants (cached per process)."""
    key = ("trained", str(synth_root))
    if key in _CACHE:
        return _CACHE[key]
    import keras

    from kfusion.config import DataConfig
    from kfusion.data.dataset import build_dataset
    from kfusion.export.prediction import recording_windows
    from kfusion.export.tflite import export_variants

    folder = tmp_path_factory.getbasetemp() / "kfusion_export_artifacts"
    folder.mkdir(exist_ok=True)
    source = f"kemocon:{synth_root}"
    dataset = build_dataset(source, DataConfig(), cache_dir=False)
    windows = recording_windows(source, DataConfig())
    labelled = np.all([dataset.labels[t] >= 0 for t in dataset.labels], axis=0)
    train = dataset.select(labelled)
    keras.utils.set_random_seed(0)  # the trained model, hence every parity number, is reproducible
    model = small_emotion_model("attention")
    targets = {t: keras.utils.to_categorical(train.labels[t], len(train.classes[t])) for t in train.labels}
    model.compile(optimizer=keras.optimizers.Adam(5e-3), loss="categorical_crossentropy",
                  jit_compile=False)
    model.optimizer.build(model.trainable_variables)  # else the first step is traced twice
    model.fit(model_inputs(train), targets, epochs=30, batch_size=32, verbose=0, shuffle=True)
    keras_path = save_with_classes(model, folder / "trained.keras", dataset.classes)
    trained = Trained(model, keras_path, dataset, windows, folder)
    # class names: the features variants from the data set given for calibration, the raw ones
    # (raw windows carry no classes) from the sidecar beside the .keras file
    trained.variants.update(export_variants(model, folder, FEATURE_VARIANTS, raw_inputs=(False,),
                                            representative=dataset, name="trained", seed=0))
    trained.variants.update(export_variants(keras_path, folder, RAW_VARIANTS, raw_inputs=(True,),
                                            representative=windows, name="trained", seed=0))
    _CACHE[key] = trained
    return trained


def run_tflite(path, inputs: dict, rows=None) -> dict:
    """Run a .tflite file window by window with the LiteRT interpreter (one thread)."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path), num_threads=1).get_signature_runner()
    n = next(iter(inputs.values())).shape[0]
    rows = range(n) if rows is None else rows
    outs = [runner(**{k: np.ascontiguousarray(v[i:i + 1], dtype=np.float32) for k, v in inputs.items()})
            for i in rows]
    return {t: np.concatenate([o[t] for o in outs]) for t in outs[0]}
