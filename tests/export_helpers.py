"""Artefacts shared by the export, front-end and prediction tests, built once per pytest
process (training and TFLite conversion take seconds each): a small five-modality attention
model trained on the shared synthetic set, its raw windows, and its exported variants (the
raw-input ones in a helper process, beside the features ones here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
    keras_path = folder / "trained.keras"
    # The raw-input variants are exported by a helper process from the saved .keras file while
    # this one exports the features variants (~10 s of ~45 s, on two cores); it starts now so its
    # imports overlap the training.
    raw_export = _start_raw_export(source, keras_path)
    try:
        keras.utils.set_random_seed(0)  # the trained model, hence every parity number, is reproducible
        model = small_emotion_model("attention")
        targets = {t: keras.utils.to_categorical(train.labels[t], len(train.classes[t])) for t in train.labels}
        model.compile(optimizer=keras.optimizers.Adam(5e-3), loss="categorical_crossentropy",
                      jit_compile=False)
        model.optimizer.build(model.trainable_variables)  # else the first step is traced twice
        model.fit(model_inputs(train), targets, epochs=30, batch_size=32, verbose=0, shuffle=True)
        save_with_classes(model, keras_path, dataset.classes)
        raw_export.stdin.write("saved\n")
        raw_export.stdin.flush()
        trained = Trained(model, keras_path, dataset, windows, folder)
        # class names: the features variants from the data set given for calibration, the raw ones
        # (raw windows carry no classes) from the sidecar beside the .keras file
        trained.variants.update(export_variants(model, folder, FEATURE_VARIANTS, raw_inputs=(False,),
                                                representative=dataset, name="trained", seed=0))
        trained.variants.update(_finish_raw_export(raw_export))
    finally:
        if raw_export.poll() is None:
            raw_export.kill()
            raw_export.wait()
    _CACHE[key] = trained
    return trained


#: The helper process of :func:`trained_synthetic`: waits for "saved" on stdin, then exports the
#: raw-input variants of the .keras file exactly as ``export_variants(keras_path, ...)`` did in
#: this process (the same windows for int8 calibration, the same seed) and prints their paths.
_RAW_EXPORT = """
import json, sys
from pathlib import Path
from kfusion.config import DataConfig
from kfusion.export.prediction import recording_windows
from kfusion.export.tflite import export_variants

source, keras_path, variants = sys.argv[1], Path(sys.argv[2]), sys.argv[3].split(",")
windows = recording_windows(source, DataConfig())
if sys.stdin.readline().strip() != "saved":
    sys.exit("no model was saved")
paths = export_variants(keras_path, keras_path.parent, variants, raw_inputs=(True,), representative=windows,
                        name="trained", seed=0)
print("PATHS " + json.dumps([[q, str(p)] for (_, q), p in paths.items()]), flush=True)
"""


def _start_raw_export(source: str, keras_path: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(keras_path.parent / "raw_export.log", "w") as log:  # a file: a full pipe would stall it
        return subprocess.Popen([sys.executable, "-c", _RAW_EXPORT, source, str(keras_path),
                                 ",".join(RAW_VARIANTS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=log, text=True, env=env, cwd=Path(__file__).resolve().parent.parent)


def _finish_raw_export(process: subprocess.Popen, timeout: float = 600) -> dict:
    """``{(True, quantization): path}`` from the helper process (its stderr if it failed)."""
    out, _ = process.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("PATHS ")]
    if process.returncode != 0 or len(lines) != 1:
        log = (Path(process.args[3]).parent / "raw_export.log").read_text()
        raise RuntimeError(f"raw-input export failed (exit {process.returncode}):\n{out[-2000:]}\n{log[-4000:]}")
    return {(True, q): Path(p) for q, p in json.loads(lines[0][len("PATHS "):])}


def run_tflite(path, inputs: dict, rows=None) -> dict:
    """Run a .tflite file window by window with the LiteRT interpreter (one thread)."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path), num_threads=1).get_signature_runner()
    n = next(iter(inputs.values())).shape[0]
    rows = range(n) if rows is None else rows
    outs = [runner(**{k: np.ascontiguousarray(v[i:i + 1], dtype=np.float32) for k, v in inputs.items()})
            for i in rows]
    return {t: np.concatenate([o[t] for o in outs]) for t in outs[0]}
