"""Sparse MFCC autoencoder; its encoder is the speech branch of the fusion graph (paper Fig. 1(a)).

The authors' layers are not recoverable (DESIGN.md §2), so this is a small design of ours with
two codes, a *global* one for the whole window and a *local* one for where things happen in it::

    convolutions  [T, 40] -> Conv1D(32, 5, stride 2) -> Conv1D(32, 5, stride 2) -> Conv1D(32, 5, stride 2)
                  -> Conv1D(16, 5, stride 2)   (ReLU, same padding: 400 -> 200 -> 100 -> 50 -> 25 frames)
    global code   mean and max over time of the 2nd convolution's output (64)
                  -> Dense(40) "code" -> ActivityL1 "sparse_code"                    -> [B, 40]
    local code    the same convolutions (own weights) -> Flatten(25 x 16 = 400) -> Dense(40) "local_code"
    decoder       [global, local] -> Dense(25 x 16, ReLU, unit-norm rows) -> Reshape [25, 16]
                  -> (UpSampling1D(2) -> Conv1D(f, 5, ReLU)) for f = 32, 32, 32 and a last upsampling
                  -> crop to T -> Conv1D(40, 5, linear) "reconstruction"          -> [B, T, 40]

The encoder (the speech embedding the fusion network takes) is the global code only. Why two
codes: a single code from the flattened convolutions spends itself on *when* the syllables and
pauses of the window fall, which the reconstruction needs and emotion does not; pooled over time
the code can only hold what is true of the whole window (which coefficients rise when the voice
is on, how fast syllables come), and the local code carries the timing (the probes behind this
choice: ``bench/RESULTS.md``, 'Why the fused rows did not beat the unimodal ones'). The design
follows the idea of sequence- vs segment-level latents in speech (factorised hierarchical VAEs),
without the variational part.

The global code is linear with an L1 activity penalty (a sparse code, DESIGN.md §1); the first
decoder Dense has unit-norm rows so the penalty cannot be dodged by shrinking the code and
growing that layer. The penalty is weak by default (1e-6 per unit of |code|): the reconstruction
of CMVN-normalised MFCCs improves slowly, and a strong penalty wins before it does and shrinks
the code towards zero (``bench/RESULTS.md``). Strided convolutions keep it CPU-friendly.
"""

from __future__ import annotations

import math

import keras

from kfusion.modalities import N_MFCC
from kfusion.errors import ConfigError
from kfusion import checks
from kfusion.models.layers import ActivityL1


def speech_autoencoder(input_shape=(400, N_MFCC), code_dim: int = 40, sparsity: float = 1e-6,
                       filters=(32, 32, 32, 16), kernel_size: int = 5,
                       code_activation: str = "linear", local_dim: int = 40,
                       name: str = "speech_encoder") -> tuple[keras.Model, keras.Model]:
    """Build ``(autoencoder, encoder)`` for MFCC windows ``[B, T, n_mfcc]``.

    ``encoder``: ``[B, T, n_mfcc] -> [B, code_dim]`` named ``name`` (use it on its own or in
    :func:`kfusion.models.fusion_backbone`); the decoder and autoencoder are ``speech_decoder``
    and ``speech_autoencoder`` by default. ``autoencoder``: ``[B, T, n_mfcc] -> [B, T, n_mfcc]``
    (train with a reconstruction loss, e.g. MSE; the sparsity penalty is added by the encoder).
    ``filters``: channels of the strided convolutions, each halving time; ``sparsity``: L1
    weight on the code (per window, averaged over the batch); ``local_dim``: size of the local
    (timing) code the decoder also gets (0: none; the encoder never outputs it). The global code
    pools the second convolution's output (the first's when there is one convolution).
    """
    steps, n_mfcc = checks.time_channels("speech_autoencoder: input_shape", input_shape)
    code_dim = checks.whole("speech_autoencoder: code_dim", code_dim)
    sparsity = checks.non_negative("speech_autoencoder: sparsity", sparsity)
    filters = checks.units("speech_autoencoder: filters", filters)
    kernel_size = checks.whole("speech_autoencoder: kernel_size", kernel_size)
    local_dim = checks.whole("speech_autoencoder: local_dim", local_dim, low=0)
    name = checks.layer_name("speech_autoencoder: name", name)
    try:
        keras.activations.get(code_activation)
    except (ValueError, TypeError):
        raise ConfigError(f"speech_autoencoder: code_activation: expected a Keras activation name, "
                          f"found {code_activation!r}") from None
    if steps < 2 ** len(filters):
        raise ConfigError(
            f"speech_autoencoder: input_shape: {len(filters)} strided convolutions halve time "
            f"{len(filters)} times, so at least {2 ** len(filters)} frames are needed, found {steps}")

    def convolutions(x, prefix: str, pool_at: int | None = None):
        pooled = None
        for i, width in enumerate(filters, start=1):
            x = keras.layers.Conv1D(width, kernel_size, strides=2, padding="same", activation="relu",
                                    name=f"{prefix}conv_{i}")(x)
            if i == pool_at:
                pooled = keras.layers.Concatenate(name="pooled")([
                    keras.layers.GlobalAveragePooling1D(name="time_mean")(x),
                    keras.layers.GlobalMaxPooling1D(name="time_max")(x)])
                break
        return x, pooled

    # Encoder (global code): strided convolutions, one of them pooled over time.
    inputs = keras.Input((steps, n_mfcc), name=f"{name}_input")
    _, pooled = convolutions(inputs, "", pool_at=min(2, len(filters)))
    code = keras.layers.Dense(code_dim, activation=code_activation, name="code")(pooled)
    code = ActivityL1(sparsity, name="sparse_code")(code)
    encoder = keras.Model(inputs, code, name=name)
    base = name.removesuffix("_encoder")
    reduced_steps = math.ceil(steps / 2 ** len(filters))
    latent = encoder(inputs)
    if local_dim:
        # Its own convolutions (no layer shared with the encoder, so each file round-trips alone).
        local_inputs = keras.Input((steps, n_mfcc), name=f"{base}_local_input")
        x, _ = convolutions(local_inputs, "local_")
        local = keras.layers.Dense(local_dim, name="local_code")(keras.layers.Flatten(name="flatten")(x))
        local_encoder = keras.Model(local_inputs, local, name=f"{base}_local_encoder")
        latent = keras.layers.Concatenate(name="codes")([latent, local_encoder(inputs)])

    # Decoder: mirror of the convolutions, upsampling by 2 per convolution, then cropped to T.
    code_in = keras.Input((code_dim + local_dim,), name="code_input")
    y = keras.layers.Dense(reduced_steps * filters[-1], activation="relu",
                           kernel_constraint=keras.constraints.UnitNorm(axis=1),
                           name="expand")(code_in)
    y = keras.layers.Reshape((reduced_steps, filters[-1]), name="unflatten")(y)
    for i, width in enumerate(reversed(filters[:-1]), start=1):
        y = keras.layers.UpSampling1D(2, name=f"upsample_{i}")(y)
        y = keras.layers.Conv1D(width, kernel_size, padding="same", activation="relu",
                                name=f"deconv_{i}")(y)
    y = keras.layers.UpSampling1D(2, name=f"upsample_{len(filters)}")(y)
    extra = reduced_steps * 2 ** len(filters) - steps
    if extra:
        y = keras.layers.Cropping1D((0, extra), name="crop")(y)
    y = keras.layers.Conv1D(n_mfcc, kernel_size, padding="same", name="reconstruction")(y)
    decoder = keras.Model(code_in, y, name=f"{base}_decoder")

    autoencoder = keras.Model(inputs, decoder(latent), name=f"{base}_autoencoder")
    return autoencoder, encoder
