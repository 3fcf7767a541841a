"""In-memory recording types shared by every reader.

All times are UNIX seconds (float64) on one clock. A reader returns one :class:`Recording`
per participant; windowing cuts every modality on that clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Signal:
    """A regularly sampled wearable signal.

    ``values``: ``[n, channels]`` float32 (NaN marks samples lost in a gap),
    ``rate``: Hz, ``start``: UNIX seconds of ``values[0]``, ``source``: file it came from.
    """

    values: np.ndarray
    rate: float
    start: float
    source: str = ""

    def __post_init__(self):
        values = np.asarray(self.values, dtype=np.float32)
        if values.ndim == 1:
            values = values[:, None]
        object.__setattr__(self, "values", values)

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    @property
    def duration(self) -> float:
        """Seconds covered by the samples."""
        return self.n / self.rate

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True)
class Audio:
    """Mono audio: ``samples`` ``[n]`` float32 in [-1, 1], ``rate`` Hz, ``start`` UNIX s."""

    samples: np.ndarray
    rate: int
    start: float
    source: str = ""

    def __post_init__(self):
        object.__setattr__(self, "samples", np.asarray(self.samples, dtype=np.float32).reshape(-1))

    @property
    def duration(self) -> float:
        return self.samples.shape[0] / self.rate

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True)
class LabelIntervals:
    """Annotations as time intervals ``[start, end)`` in UNIX seconds.

    ``columns`` maps a raw label column (e.g. ``arousal``, ``cheerful``, ``stress``) to a
    ``[k]`` float array aligned with ``start``/``end`` (NaN = not annotated).

    ``scheme`` says how :mod:`kfusion.data.labels` turns columns into training targets:
    ``"kemocon"`` (arousal/valence 1-5 and five 1-4 emotion ratings -> ``arousal``,
    ``valence`` (3 levels) and ``emotion`` (6 classes)) or ``"classes"`` (each column already
    holds class indices 0..k-1, named by ``classes[column]``).
    """

    start: np.ndarray
    end: np.ndarray
    columns: dict[str, np.ndarray]
    source: str = ""
    scheme: str = "classes"
    classes: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "start", np.asarray(self.start, dtype=np.float64).reshape(-1))
        object.__setattr__(self, "end", np.asarray(self.end, dtype=np.float64).reshape(-1))
        cols = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in self.columns.items()}
        object.__setattr__(self, "columns", cols)

    def __len__(self) -> int:
        return int(self.start.shape[0])


@dataclass(frozen=True)
class Segments:
    """Separate pieces of one recording on its clock, e.g. the utterances of a clip corpus
    (one audio file each, laid end to end with silence between them).

    ``start``/``end``: ``[S]`` UNIX seconds, sorted and not overlapping; ``names``: what each
    piece is (its file). Windows never straddle two segments: each segment is cut on its own
    from its start (:func:`kfusion.data.windows.segment_window_starts`); a segment shorter than
    a window gives one window, zero-padded after the segment's end, whose real length is kept.
    """

    start: np.ndarray
    end: np.ndarray
    names: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "start", np.asarray(self.start, dtype=np.float64).reshape(-1))
        object.__setattr__(self, "end", np.asarray(self.end, dtype=np.float64).reshape(-1))
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        if self.start.shape != self.end.shape or (self.names and len(self.names) != len(self.start)):
            raise ValueError("Segments: start, end (and names) must have the same length")
        if np.any(~(self.end > self.start)) or np.any(self.start[1:] < self.end[:-1]):
            raise ValueError("Segments: expected sorted, non-overlapping [start, end) pieces")

    def __len__(self) -> int:
        return int(self.start.shape[0])

    @property
    def seconds(self) -> float:
        """Total length of the segments (s)."""
        return float(np.sum(self.end - self.start))


@dataclass
class Recording:
    """Everything known about one participant.

    ``signals`` maps a wearable modality (``acc``, ``bvp``, ``eda``, ``temp``) to its
    :class:`Signal`; ``audio`` is the participant's speech (or None); ``labels`` the
    annotation intervals (or None); ``span`` an optional ``(start, end)`` restricting
    windowing (e.g. K-EmoCon's debate); ``notes`` human-readable remarks from the reader
    (e.g. "mono debate audio: both speakers"). ``segments``: optional :class:`Segments`
    (utterances of a clip corpus) that windows never straddle; None for one continuous recording.
    """

    participant: str
    signals: dict = field(default_factory=dict)
    audio: Audio | None = None
    labels: LabelIntervals | None = None
    span: tuple[float, float] | None = None
    notes: list = field(default_factory=list)
    source: str = ""
    segments: Segments | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        from kfusion.modalities import MODALITIES, SPEECH

        have = set(self.signals) | ({SPEECH} if self.audio is not None else set())
        return tuple(m for m in MODALITIES if m in have)
