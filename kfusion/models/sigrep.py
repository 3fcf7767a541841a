"""SigRep wearable-signal encoder (paper Fig. 1(b)-(c); DESIGN.md §2).

Default layout (the authors' deployed TFLite graph), for an input ``[T, C]``::

    block 1   Conv1D(2,k=1) Conv1D(2,k=3) Conv1D(2,k=5) Conv1D(2,k=7)  -> concat (8 ch)  -> MaxPool1D(2)
    block b   the same four convolutions + MaxPool1D(3, stride 1, same) of the block input
              -> concat (16, 24, 32 ch for b = 2, 3, 4)                          -> MaxPool1D(2)
    GlobalMaxPool1D -> Dense(40, no bias) "bottleneck"                              -> [B, 40]

Convolutions: padding ``same``, ReLU, no bias. 2,848 parameters for one input channel,
2,912 for ACC's three. The last block's pooled map ``[B, T / 2**blocks, channels]`` is the
layer ``"feature_map"`` (``keras.Model(enc.input, enc.get_layer("feature_map").output)``).

ACC layout: the natural Keras layout ``[128, 3]`` (x, y, z as channels) is the default here.
The authors' app instead concatenates x, y, z into one channel ``[384, 1]``; build that with
``sigrep_encoder(input_shape=(384, 1), name="acc_encoder")`` and feed the axes concatenated.
"""

from __future__ import annotations

import keras

from kfusion.modalities import check_modalities, input_shape as modality_input_shape
from kfusion.errors import ConfigError
from kfusion import checks


def sigrep_encoder(modality: str | None = None, input_shape=None, filters: int = 2,
                   kernel_sizes=(1, 3, 5, 7), blocks: int = 4, embedding_dim: int = 40,
                   name: str | None = None) -> keras.Model:
    """A SigRep encoder ``[B, T, C] -> [B, embedding_dim]``.

    ``modality`` (``acc``, ``bvp``, ``eda``, ``temp``; speech also works) picks the default
    ``input_shape`` for 4 s windows; an explicit ``input_shape=(T, C)`` wins. ``filters``:
    filters of each parallel convolution; ``kernel_sizes``: one convolution per size;
    ``blocks``: inception-like blocks, each halving time (so ``T >= 2**blocks``).
    The model is named ``name`` or ``f"{modality}_encoder"`` (``"sigrep_encoder"`` without a
    modality).
    """
    if modality is not None:
        (modality,) = check_modalities([modality])
    if input_shape is None:
        if modality is None:
            raise ConfigError("sigrep_encoder: give a modality (acc, bvp, eda, temp) or an "
                              "input_shape=(time, channels)")
        input_shape = modality_input_shape(modality)
    steps, channels = checks.time_channels("sigrep_encoder: input_shape", input_shape)
    filters = checks.whole("sigrep_encoder: filters", filters)
    kernel_sizes = checks.units("sigrep_encoder: kernel_sizes", kernel_sizes)
    if len(set(kernel_sizes)) != len(kernel_sizes):
        raise ConfigError(f"sigrep_encoder: kernel_sizes: expected distinct sizes, found {kernel_sizes}")
    blocks = checks.whole("sigrep_encoder: blocks", blocks)
    embedding_dim = checks.whole("sigrep_encoder: embedding_dim", embedding_dim)
    if steps < 2 ** blocks:
        raise ConfigError(
            f"sigrep_encoder: input_shape: {blocks} blocks halve time {blocks} times, so at least "
            f"{2 ** blocks} time steps are needed, found {steps}; use fewer blocks or longer windows")
    if name is None:
        name = f"{modality}_encoder" if modality else "sigrep_encoder"
    name = checks.layer_name("sigrep_encoder: name", name)

    inputs = keras.Input((steps, channels), name=f"{name}_input")
    x = inputs
    for block in range(1, blocks + 1):
        branches = [
            keras.layers.Conv1D(filters, k, padding="same", activation="relu", use_bias=False,
                                name=f"block{block}_conv{k}")(x)
            for k in kernel_sizes
        ]
        if block > 1:
            branches.append(keras.layers.MaxPool1D(3, strides=1, padding="same",
                                                   name=f"block{block}_pool_branch")(x))
        x = (keras.layers.Concatenate(name=f"block{block}_concat")(branches)
             if len(branches) > 1 else branches[0])
        x = keras.layers.MaxPool1D(2, name="feature_map" if block == blocks else f"block{block}_pool")(x)
    x = keras.layers.GlobalMaxPool1D(name="global_pool")(x)
    outputs = keras.layers.Dense(embedding_dim, use_bias=False, name="bottleneck")(x)
    return keras.Model(inputs, outputs, name=name)


def sigrep_parameter_count(channels: int = 1, filters: int = 2, kernel_sizes=(1, 3, 5, 7),
                           blocks: int = 4, embedding_dim: int = 40) -> int:
    """Closed-form parameter count of :func:`sigrep_encoder` (no biases anywhere)."""
    per_input_channel = filters * sum(kernel_sizes)
    count, width = 0, channels
    for block in range(1, blocks + 1):
        count += width * per_input_channel
        width = filters * len(kernel_sizes) + (width if block > 1 else 0)
    return count + width * embedding_dim
