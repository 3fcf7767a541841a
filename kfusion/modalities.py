"""The five modalities, their nominal sample rates and model input shapes.

Plain constants below every layer: configs, data, models, training and export all name
modalities, so the names live here and import nothing but :mod:`kfusion.errors`.
"""

from __future__ import annotations

from kfusion.errors import ConfigError

SPEECH = "speech"
ACC, BVP, EDA, TEMP = "acc", "bvp", "eda", "temp"
WEARABLES: tuple[str, ...] = (ACC, BVP, EDA, TEMP)
MODALITIES: tuple[str, ...] = (SPEECH, ACC, BVP, EDA, TEMP)

#: Empatica E4 nominal sample rates (Hz); readers resample other rates to these.
NOMINAL_RATES: dict[str, float] = {ACC: 32.0, BVP: 64.0, EDA: 4.0, TEMP: 4.0}
#: Channels per wearable modality (ACC: x, y, z in 1/64 g).
CHANNELS: dict[str, int] = {ACC: 3, BVP: 1, EDA: 1, TEMP: 1}
#: Speech is resampled to this rate (Hz), mono, before MFCC extraction.
AUDIO_RATE = 16_000
N_MFCC = 40

#: The statistics of a masked segment predicted in fusion pretraining (paper §3.2: seven named,
#: eight implied by "40 values for five modalities"; the eighth is the median). One target per
#: modality and statistic, named ``f"{modality}_{statistic}"``.
STATISTICS: tuple[str, ...] = ("mean", "std", "min", "max", "skewness", "kurtosis", "peaks", "median")


def input_shape(modality: str, window_seconds: float = 4.0) -> tuple[int, int]:
    """Model input shape ``[time, channels]`` of one window of ``modality``.

    Speech: ``[window_seconds / 10 ms, 40]`` MFCC frames; wearables: samples at the nominal
    rate times channels, e.g. ACC ``[128, 3]`` for 4 s.
    """
    check_modalities([modality])
    if modality == SPEECH:
        return (int(round(window_seconds * 100)), N_MFCC)
    return (int(round(window_seconds * NOMINAL_RATES[modality])), CHANNELS[modality])


def check_modalities(modalities) -> tuple[str, ...]:
    """Validate and normalise a modality list (order kept, duplicates rejected)."""

    if isinstance(modalities, str):
        modalities = [modalities]
    out = []
    for m in modalities:
        name = str(m).lower()
        if name not in MODALITIES:
            raise ConfigError(f"unknown modality {m!r}: expected one of {', '.join(MODALITIES)}")
        if name in out:
            raise ConfigError(f"modality {name!r} given twice")
        out.append(name)
    if not out:
        raise ConfigError("at least one modality is needed")
    return tuple(out)
