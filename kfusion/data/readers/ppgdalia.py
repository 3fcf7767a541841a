"""Reader for the PPG-DaLiA release (source ``ppgdalia:PATH``).

PPG-DaLiA (Reiss et al., Sensors 19(14):3079, 2019): 15 subjects (``S1`` .. ``S15``), about
2.5 h each of daily-life activities with a chest RespiBAN and a wrist Empatica E4. ``PATH`` is
the unzipped release folder::

    S<k>/S<k>.pkl    Python 2 pickle (read with encoding latin1): a dict with
                     signal.wrist.ACC [n, 3] 32 Hz (1/64 g), .BVP [n, 1] 64 Hz, .EDA [n, 1] 4 Hz,
                     .TEMP [n, 1] 4 Hz; signal.chest (700 Hz; not read); activity [n, 1] at 4 Hz
                     (0 transient, 1 sitting, 2 ascending/descending stairs, 3 table soccer,
                     4 cycling, 5 driving a car, 6 lunch break, 7 walking, 8 working);
                     label = reference heart rate per 8 s window, shifted by 2 s (not read);
                     rpeaks, questionnaire, subject
    (S<k>_activity.csv, S<k>_quest.csv, S<k>_E4.zip, S<k>_RespiBAN.h5: not read)

Participant ids are the folder names. Only the pickles of the folder the user names are opened,
with a restricted unpickler (see :mod:`kfusion.data.readers.wrist_pickle`), and the signals and
activity keep the pickle's clock, sample 0 at the nominal UNIX time 1 000 000 000 (the pickle
holds no date); activity sample ``i`` covers ``[i, i + 1) / 4`` s.

**Target** ``activity`` (scheme ``classes``): sitting, stairs, table soccer, cycling, driving,
lunch, walking, working (codes 1-8 -> classes 0-7; one interval per run of one code). Code 0
(transient periods between activities) is unlabelled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kfusion.config import DataConfig
from kfusion.modalities import WEARABLES
from kfusion.data.readers.wrist_pickle import (NOMINAL_START, code_array, code_runs, release_files,
                                               subject_folders, subject_pickle, wrist_signals)
from kfusion.data.recording import LabelIntervals, Recording

ACTIVITY_KEY = "activity"
ACTIVITY_RATE = 4.0
#: Activity codes 1-8 -> class names (class index = code - 1); 0 = transient, unlabelled.
ACTIVITIES: dict[int, str] = {1: "sitting", 2: "stairs", 3: "table soccer", 4: "cycling",
                              5: "driving", 6: "lunch", 7: "walking", 8: "working"}
ACTIVITY_MEANING = ("0-8 (0 transient, 1 sitting, 2 stairs, 3 table soccer, 4 cycling, 5 driving, "
                    "6 lunch, 7 walking, 8 working)")


class PpgDaliaReader:
    """``ppgdalia:PATH`` with PATH the unzipped PPG-DaLiA release (``S1/`` .. ``S15/``)."""

    modalities = WEARABLES
    description = "PPG-DaLiA release (S<k>/S<k>.pkl wrist signals + 4 Hz activity labels); activity"

    def participants(self, root: Path) -> list[str]:
        return subject_folders(root, "ppgdalia", "PPG-DaLiA")

    def source_files(self, root: Path) -> list[Path]:
        """Each subject's pickle (nothing else is opened)."""
        return release_files(root, self.participants(root))

    def read(self, root: Path, participant: str, config: DataConfig | None = None) -> Recording:
        config = config or DataConfig()
        path, data = subject_pickle(root, participant, "the PPG-DaLiA subject pickle S<k>/S<k>.pkl")
        codes = code_array(data, ACTIVITY_KEY, path, range(9), ACTIVITY_MEANING)
        signals, notes = wrist_signals(data, path, config.modalities,
                                       (ACTIVITY_KEY, codes.size, ACTIVITY_RATE))
        first, end, run_codes = code_runs(codes)
        keep = run_codes > 0
        transient = float(np.sum((end - first)[~keep])) / ACTIVITY_RATE
        if transient:
            notes.append(f"{path.name}: {transient:.0f} s of transient periods (activity 0, unlabelled)")
        first, end, run_codes = first[keep], end[keep], run_codes[keep]
        labels = LabelIntervals(start=NOMINAL_START + first / ACTIVITY_RATE,
                                end=NOMINAL_START + end / ACTIVITY_RATE,
                                columns={"activity": (run_codes - 1).astype(np.float64)},
                                source=str(path), scheme="classes",
                                classes={"activity": tuple(ACTIVITIES.values())})
        return Recording(participant=participant, signals=signals, labels=labels, notes=notes,
                         source=str(path.parent))


READER = PpgDaliaReader()
