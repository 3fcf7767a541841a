"""Training: self-supervised stages and emotion training.

``augment`` (random signal augmentations as Keras layers), ``contrastive`` (NT-Xent and the
contrastive model that pretrains one wearable encoder), ``masking`` (masked-span statistics as
fusion-pretraining targets, built in ``tf.data``), ``pretrain`` (the three self-supervised
stages, resumable), ``audio_corpus`` (MFCC windows from audio folders), ``emotion`` (emotion heads
trained on frozen outputs, Table 1's row models; the search over them is
``kfusion.evaluation.tuning``, as it tunes evaluation rows). Encoders and fusion models are taken as
arguments: this package builds on ``kfusion.data`` and ``kfusion.models`` and nothing above.
"""
