"""Former home of :mod:`kfusion.modalities`, kept only for the evaluation and training modules
being restructured (issue 14); new code imports :mod:`kfusion.modalities`. Delete this module
once ``grep -rn kfusion.data.modalities kfusion`` finds nothing else."""

from kfusion.modalities import (  # noqa: F401  (re-exported for the modules named above)
    ACC,
    AUDIO_RATE,
    BVP,
    CHANNELS,
    EDA,
    MODALITIES,
    N_MFCC,
    NOMINAL_RATES,
    SPEECH,
    STATISTICS,
    TEMP,
    WEARABLES,
    check_modalities,
    input_shape,
)
