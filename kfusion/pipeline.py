"""The whole method end to end: pretraining (encoders, speech), fusion pretraining, the
leave-one-subject-out protocol. ``kfusion demo`` and ``kfusion reproduce`` are calls into here.

Each stage writes its own resumable run folder under ``out`` (``pretrain-encoders``,
``pretrain-speech``, ``pretrain-fusion``, ``evaluation``); re-running the same call skips what
is finished, so a crash costs at most the epoch or fold under way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from kfusion import checks
from kfusion.config import DataConfig, _Config
from kfusion.errors import ConfigError
from kfusion.evaluation import ALL_ROWS, TARGETS, EvaluationConfig, Pretrained, Results, evaluate
from kfusion.evaluation.rows import ROWS
from kfusion.runs import RunFolder
from kfusion.training.pretrain import (
    EncoderPretrainConfig,
    FusionPretrainConfig,
    SpeechPretrainConfig,
    pretrain_encoders,
    pretrain_fusion,
    pretrain_speech,
)


@dataclass(frozen=True)
class PipelineConfig(_Config):
    """Every setting of a whole run (saved as ``config.json`` in its folder)."""

    data: DataConfig = field(default_factory=DataConfig)
    encoders: EncoderPretrainConfig = field(default_factory=EncoderPretrainConfig)
    speech: SpeechPretrainConfig = field(default_factory=SpeechPretrainConfig)
    fusion: FusionPretrainConfig = field(default_factory=FusionPretrainConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    rows: tuple = ALL_ROWS
    targets: tuple = TARGETS
    seed: int = 0

    def __post_init__(self):
        for name, cls in _PIPELINE_PARTS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"PipelineConfig.{name}: expected a {cls.__name__}, "
                                  f"found {type(getattr(self, name)).__name__}")
        unknown = [r for r in self.rows if r not in ALL_ROWS]
        if unknown or not self.rows:
            raise ConfigError(f"rows: expected some of {', '.join(ALL_ROWS)}, found {list(self.rows)}")
        checks.whole("seed", self.seed, 0)

    @classmethod
    def demo(cls) -> "PipelineConfig":
        """Short pretraining for the embedded synthetic set (minutes on a laptop CPU). Emotion
        heads train in batches of 32, so a fold of the small demo set still takes enough
        optimiser steps per epoch."""
        return cls(encoders=EncoderPretrainConfig(epochs=3, max_windows=3000),
                   speech=SpeechPretrainConfig(epochs=30),
                   fusion=FusionPretrainConfig(epochs=3),
                   evaluation=EvaluationConfig(batch_size=32))


_PIPELINE_PARTS = {"data": DataConfig, "encoders": EncoderPretrainConfig, "speech": SpeechPretrainConfig,
                   "fusion": FusionPretrainConfig, "evaluation": EvaluationConfig}


def _seeded(config: PipelineConfig) -> PipelineConfig:
    """One seed fixes every stage."""
    seed = config.seed
    return dataclasses.replace(config, encoders=config.encoders.replace(seed=seed),
                               speech=config.speech.replace(seed=seed),
                               fusion=config.fusion.replace(seed=seed))


def pretrain_all(pretraining_sources, out: str | Path, config: PipelineConfig | None = None,
                 cache_dir=None, progress: bool = True, verbose="auto") -> Pretrained:
    """Stages 1a, 1b and 2 on unlabelled ``pretraining_sources``; returns the frozen models the
    protocol starts from."""
    from tqdm.auto import tqdm

    import kfusion.models  # noqa: F401  (registers the custom layers before loading)
    import keras

    config = _seeded(config or PipelineConfig())
    out = Path(out)
    wearables = [m for m in config.data.modalities if m != "speech"]
    bar = tqdm(total=3, desc="pretraining stages", unit="stage", disable=not progress)
    encoders = {}
    if wearables:
        bar.set_postfix_str("encoders")
        paths = pretrain_encoders(pretraining_sources, out / "pretrain-encoders", config.encoders,
                                  modalities=wearables, cache_dir=cache_dir, progress=progress,
                                  verbose=verbose)
        encoders.update({m: keras.saving.load_model(p, compile=False) for m, p in paths.items()})
    bar.update()
    speech_paths = None
    if "speech" in config.data.modalities:
        bar.set_postfix_str("speech")
        speech_paths = pretrain_speech(pretraining_sources, out / "pretrain-speech", config.speech,
                                       cache_dir=cache_dir, verbose=verbose)
        encoders["speech"] = keras.saving.load_model(speech_paths["encoder"], compile=False)
    bar.update()
    # Only the mechanisms of the requested "with fusion training" rows need stage 2.
    mechanisms = [ROWS[r].mechanism for r in config.rows if ROWS[r].with_fusion_training]
    backbones = {}
    if mechanisms:
        bar.set_postfix_str("fusion")
        fusion_config = config.fusion.replace(modalities=config.data.modalities)
        fused = pretrain_fusion(pretraining_sources, out / "pretrain-fusion", fusion_config,
                                encoders=out / "pretrain-encoders" if wearables else None,
                                speech_encoder=speech_paths["encoder"] if speech_paths else None,
                                mechanisms=mechanisms, cache_dir=cache_dir, progress=progress,
                                verbose=verbose)
        backbones = {mechanism: keras.saving.load_model(paths["backbone"], compile=False)
                     for mechanism, paths in fused.items()}
    bar.update()
    bar.close()
    return Pretrained(encoders=encoders, fusion_backbones=backbones)


def run_pipeline(evaluation_sources, pretraining_sources, out: str | Path,
                 config: PipelineConfig | None = None, cache_dir=None, progress: bool = True,
                 verbose="auto", workers: int | None = 1, scheduler: str | None = None) -> Results:
    """Pretrain on ``pretraining_sources`` (no labels used), then evaluate Table 1's rows
    leave-one-subject-out on ``evaluation_sources``; everything under the run folder ``out``.
    ``workers`` / ``scheduler``: where the protocol's folds run (see :func:`evaluate`; the
    numbers do not depend on it)."""
    from kfusion.data.dataset import build_dataset

    config = _seeded(config or PipelineConfig())
    out = Path(out)

    def as_list(sources):
        return [str(sources)] if isinstance(sources, (str, Path)) else [str(x) for x in sources]

    RunFolder(out).start({"pipeline": config.to_dict(), "evaluation_sources": as_list(evaluation_sources),
                          "pretraining_sources": as_list(pretraining_sources)},
                         command="kfusion.pipeline.run_pipeline")
    cache_dir = out / "cache" if cache_dir is None else cache_dir
    pretrained = pretrain_all(pretraining_sources, out, config, cache_dir=cache_dir,
                              progress=progress, verbose=verbose)
    dataset = build_dataset(evaluation_sources, config.data, cache_dir=cache_dir, progress=progress)
    return evaluate(dataset, pretrained, rows=config.rows, targets=config.targets,
                    out=out / "evaluation", seed=config.seed, config=config.evaluation,
                    progress=progress, workers=workers, scheduler=scheduler)


def shipped_pretrained(modalities=None) -> Pretrained:
    """The shipped models (:mod:`kfusion.saved_models`): SigRep encoders pretrained on Stress-Predict, the
    speech autoencoder and the fusion backbones pretrained on a synthetic set (see their cards).
    The backbones (five modalities) are left out when ``modalities`` is a subset."""
    from kfusion import saved_models
    from kfusion.models import backbone_of

    from kfusion.modalities import MODALITIES

    modalities = tuple(modalities or MODALITIES)
    encoders = {m: saved_models.load(f"sigrep-{m}") for m in modalities if m != "speech"}
    if "speech" in modalities:
        encoders["speech"] = saved_models.load("speech-autoencoder-synthetic")
    backbones = {}
    # The shipped backbones take all five modalities: of no use to a narrower data set.
    if set(modalities) == set(MODALITIES):
        for mechanism in ("unweighted", "weighted", "attention"):
            backbones[mechanism] = backbone_of(saved_models.load(f"fusion-{mechanism}-synthetic"))
    return Pretrained(encoders=encoders, fusion_backbones=backbones)
