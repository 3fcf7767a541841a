"""Configuration dataclasses; every run folder stores them as JSON (``to_dict``/``from_dict``)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from kfusion.modalities import MODALITIES, check_modalities
from kfusion import checks
from kfusion.errors import ConfigError


class _Config:
    """JSON round-trip with validation; unknown keys are errors, not silently dropped."""

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, _Config) else (
                list(value) if isinstance(value, tuple) else value)
        return out

    @classmethod
    def from_dict(cls, data: dict | None, where: str = "config", source: str | None = None):
        """Build from a dict; errors name ``where`` (``source`` = the file or object it came from,
        for a section read within it; the fields' own checks already name the section)."""
        source = where if source is None else source
        data = dict(data or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                              f"expected some of {', '.join(fields)}")
        kwargs = {}
        for name, value in data.items():
            sub = _nested_config_class(fields[name])
            kwargs[name] = sub.from_dict(value, f"{where}.{name}", source) if sub else (
                tuple(value) if isinstance(value, list) else value)
        try:
            return cls(**kwargs)
        except ConfigError as err:  # the field's own check; say where the value came from
            raise ConfigError(f"{source}: {err}") from None

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path):
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from None
        return cls.from_dict(data, where=str(path))


@dataclass(frozen=True)
class WindowConfig(_Config):
    """How recordings are cut: ``seconds`` long windows, consecutive ones sharing ``overlap`` s.

    ``missing``: ``"drop"`` a window lacking a requested modality (counted in the report), or
    ``"fill"`` it with zeros and mark the modality absent in the presence mask.
    ``min_label_coverage``: fraction of the window the best annotation interval must cover for
    the window to get that label (otherwise it is unlabelled).
    """

    seconds: float = 4.0
    overlap: float = 1.0
    missing: str = "drop"
    min_label_coverage: float = 0.5

    def __post_init__(self):
        # Checked, not normalised: the values are saved as given (4 stays 4 in config.json).
        checks.positive("window.seconds", self.seconds, "a positive number of seconds")
        checks.number("window.overlap", self.overlap, 0, float(self.seconds), high_open=True,
                      what="a number of seconds (less than window.seconds)")
        checks.choice("window.missing", self.missing, ("drop", "fill"))
        checks.fraction("window.min_label_coverage", self.min_label_coverage, low_open=True)

    @property
    def hop(self) -> float:
        """Seconds between consecutive window starts."""
        return self.seconds - self.overlap


@dataclass(frozen=True)
class FeatureConfig(_Config):
    """Per-window normalisation. ``wearable_norm``: ``"zscore"`` (each window and channel on
    its own, as the authors' app does) or ``"none"``. ``speech_norm``: ``"cmvn"`` (each MFCC
    coefficient z-scored over the window's frames) or ``"none"``. ``speech_prosody``: speech
    window levels also hold pitch and voicing (``kfusion.data.prosody``: f0 mean, f0 std, voiced
    fraction, periodicity, f0 change), standardised per person like the other levels.
    ``speech_flux``: they also hold the cepstral flux of MFCC coefficients 0-12
    (``kfusion.data.spectral_flux``: how fast the spectral envelope moves), after the prosody."""

    wearable_norm: str = "zscore"
    speech_norm: str = "cmvn"
    speech_prosody: bool = True
    speech_flux: bool = True

    def __post_init__(self):
        checks.choice("features.wearable_norm", self.wearable_norm, ("zscore", "none"))
        checks.choice("features.speech_norm", self.speech_norm, ("cmvn", "none"))
        checks.flag("features.speech_prosody", self.speech_prosody)
        checks.flag("features.speech_flux", self.speech_flux)


#: Which K-EmoCon perspective labels the windows (see :class:`DataConfig`).
ANNOTATIONS: tuple[str, ...] = ("self", "partner", "external", "aggregated_external")

#: Per-person calibration choices (see :class:`CalibrationConfig`).
CALIBRATIONS: tuple[str, ...] = ("none", "participant", "head")


@dataclass(frozen=True)
class CalibrationConfig(_Config):
    """Per-person calibration, per modality family (``wearable``: ACC, BVP, EDA, TEMP;
    ``speech``: the MFCCs).

    ``"none"``: signals as recorded. ``"participant"``: each channel (each MFCC coefficient) is
    standardised by the mean and standard deviation of that participant's own recording, all of
    it (never its labels). ``"head"``: the same statistics from only the first ``head_minutes``
    of the participant's recording, what an app can do after a calibration period (10 by
    default: an E4 settles on the skin during its first minutes, so a shorter head is not the
    person's baseline; the comparison is in bench/RESULTS.md).
    Statistics come from the signals before windowing (speech: non-silent frames only). The
    per-window normalisation (:class:`FeatureConfig`) applies on top; each window's calibrated
    level (mean and log-std per channel) is kept beside it as ``WindowedDataset.levels``.
    ``standardize_levels``: those levels are further standardised by the mean and standard
    deviation of the person's window levels over the same calibration signal (per-speaker
    feature normalisation; bench/RESULTS.md, "Standardised levels").
    """

    wearable: str = "participant"
    speech: str = "participant"
    head_minutes: float = 10.0
    standardize_levels: bool = True

    def __post_init__(self):
        for family in ("wearable", "speech"):
            checks.choice(f"calibration.{family}", getattr(self, family), CALIBRATIONS)
        checks.positive("calibration.head_minutes", self.head_minutes, "a positive number of minutes")
        checks.flag("calibration.standardize_levels", self.standardize_levels)

    def method(self, modality: str) -> str:
        """The calibration of ``modality`` (``"none"``, ``"participant"`` or ``"head"``)."""
        return self.speech if modality == "speech" else self.wearable

    @classmethod
    def parse(cls, text: str) -> "CalibrationConfig":
        """``"none"``, ``"participant"``, ``"head"`` or ``"head:MINUTES"`` (both families)."""
        text = str(text).strip()
        method, _, minutes = text.partition(":")
        if method != "head" and minutes:
            raise ConfigError(f"calibration: minutes only go with 'head' (head:MINUTES), found {text!r}")
        try:
            head = float(minutes) if minutes else cls.head_minutes
        except ValueError:
            raise ConfigError(f"calibration: expected head:MINUTES with a number, found {text!r}") from None
        return cls(wearable=method, speech=method, head_minutes=head)

    def describe(self) -> str:
        """One line for reports, e.g. ``"participant"`` or ``"wearable head (5 min), speech none"``."""
        def one(method):
            return f"head ({self.head_minutes:g} min)" if method == "head" else method
        if self.wearable == self.speech:
            return one(self.wearable)
        return f"wearable {one(self.wearable)}, speech {one(self.speech)}"


@dataclass(frozen=True)
class DataConfig(_Config):
    """What to make of a data source: modalities, windows, features, annotations.

    ``calibration``: per-person calibration (:class:`CalibrationConfig`). ``quality_checks``:
    windows touching samples a sensor cannot have produced, or produced off the skin
    (:mod:`kfusion.data.quality`), lack that modality (switch off only for non-E4 units).
    ``annotations``: which K-EmoCon perspective labels the windows (``self``, ``partner``,
    ``external``, ``aggregated_external``). ``meditation``: WESAD's meditation periods become a
    fourth ``condition`` class (and non-stress); by default they are unlabelled. ``skip_bad``:
    report participants whose files are bad and go on, instead of stopping.
    """

    modalities: tuple = MODALITIES
    window: WindowConfig = field(default_factory=WindowConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    annotations: str = "self"
    meditation: bool = False
    skip_bad: bool = False
    quality_checks: bool = True

    def __post_init__(self):
        object.__setattr__(self, "modalities", check_modalities(self.modalities))
        for name in ("quality_checks", "meditation"):
            checks.flag(name, getattr(self, name))
        checks.choice("annotations", self.annotations, ANNOTATIONS)


def _nested_config_class(f: dataclasses.Field):
    """The config class of a field whose default is itself a config (read as a sub-dict)."""
    if f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
        if isinstance(default, _Config):
            return type(default)
    return None
