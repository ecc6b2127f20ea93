"""Two small image classifiers for the CNN-vs-RNN question (homework Q1), and image transforms.

Both models take grey images `[batch, height, width]` (float, 0..1) and return float32 logits
`[batch, num_classes]`; `dtype` is the compute dtype (parameters stay float32).

- `CNNClassifier`: 3x3 convolutions (SAME padding), one 2x2 max-pool, then global average
  pooling and a linear head. Nothing in it depends on the image size, so it runs on any height
  and width >= 1 without retraining. What changes on another size is the statistics it sees: the
  global average then covers more (or fewer) positions, so a bigger canvas dilutes the digit's
  features with background activations; it runs, but accuracy is not guaranteed.
- `RowGRUClassifier`: a GRU reads the image row by row (one row of `width` pixels per time step)
  and a linear head reads its final hidden state. The number of rows is free (any height, and
  per-image heights through `lengths`); the row width is fixed by the GRU's input projection
  (`input_width`): another width is refused with a clear error unless the caller pads or crops.

Sequential depth (the longest chain of dependent steps) differs in kind: the CNN's is its number
of layers (6, for every image size), the RNN's grows with the height (one GRU step per row, then
the head): see `sequential_steps`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from hw3_jax.gru import GRU

Dtype = Any


class CNNClassifier(nn.Module):
    """conv3x3(16) - conv3x3(32) - maxpool2x2 - conv3x3(32) - global average pool - dense.

    images: [batch, height, width] or [batch, height, width, 1] -> logits [batch, num_classes].
    Any height/width: padding is SAME and the global average pool removes the spatial axes.
    """

    num_classes: int = 10
    features: Sequence[int] = (16, 32, 32)
    dtype: Dtype = jnp.float32
    POOL_AFTER = 1  # the index of the conv the 2x2 max-pool follows

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, deterministic: bool = True) -> jnp.ndarray:
        del deterministic  # no dropout: the comparison is about the architectures alone
        x = images if images.ndim == 4 else images[..., None]  # [B, H, W, 1]
        x = x.astype(self.dtype)
        for i, f in enumerate(self.features):
            x = nn.relu(nn.Conv(f, (3, 3), padding="SAME", dtype=self.dtype, name=f"conv{i}")(x))
            if i == self.POOL_AFTER:
                # SAME padding so odd (and 1-pixel) sides still work.
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        x = jnp.mean(x, axis=(1, 2))  # global average pool: [B, C], size-independent
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
        return logits.astype(jnp.float32)


class RowGRUClassifier(nn.Module):
    """A GRU over the image rows (one row per step) and a dense head on its final hidden state.

    images: [batch, height, input_width]; lengths: optional int [batch] real rows per image (for
    batches of images of different heights padded at the bottom) -> logits [batch, num_classes].
    """

    input_width: int = 8
    num_classes: int = 10
    hidden_size: int = 64
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        images: jnp.ndarray,
        lengths: jnp.ndarray | None = None,
        *,
        deterministic: bool = True,
    ) -> jnp.ndarray:
        if images.ndim == 4:
            if images.shape[-1] != 1:
                raise ValueError(f"RowGRUClassifier takes grey images; got shape {images.shape}")
            images = images[..., 0]
        if images.shape[-1] != self.input_width:
            raise ValueError(
                f"RowGRUClassifier reads rows of width {self.input_width}, got width "
                f"{images.shape[-1]} (shape {images.shape}): pad or crop the width to "
                f"{self.input_width}; the number of rows (height) is free."
            )
        x = images.astype(self.dtype)  # [B, T=height, F=width]
        # The project's GRU (PyTorch parameterisation); final_hidden [1, B, hidden].
        _, final = GRU(self.hidden_size, dtype=self.dtype, name="gru")(
            x, lengths, deterministic=deterministic
        )
        h = final[-1]  # [B, hidden]
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(h)
        return logits.astype(jnp.float32)


def sequential_steps(model: nn.Module, height: int) -> int:
    """Longest chain of dependent steps for one image of `height` rows.

    CNN: its layers (3 convs, the max-pool, the global pool, the head): 6 for every size.
    RNN: one GRU step per row, each needing the previous hidden state, then the head.
    """
    if isinstance(model, CNNClassifier):
        return len(model.features) + 3
    if isinstance(model, RowGRUClassifier):
        return height + 1
    raise TypeError(f"unknown model {type(model).__name__}")


def multiply_adds(model: nn.Module, height: int, width: int) -> int:
    """Multiply-adds per image (analytic, the matrix products only)."""
    if isinstance(model, CNNClassifier):
        total, cin, h, w = 0, 1, height, width
        for i, f in enumerate(model.features):
            total += h * w * 9 * cin * f
            cin = f
            if i == model.POOL_AFTER:
                h, w = -(-h // 2), -(-w // 2)
        return total + cin * model.num_classes
    if isinstance(model, RowGRUClassifier):
        hs = model.hidden_size
        return height * 3 * (width * hs + hs * hs) + hs * model.num_classes
    raise TypeError(f"unknown model {type(model).__name__}")


def architecture(model: nn.Module, height: int, width: int) -> str:
    """`model`'s layers in one line, e.g. "GRU(64) over 8 rows of 8 pixels-dense"."""
    if isinstance(model, CNNClassifier):
        layers = []
        for i, f in enumerate(model.features):
            layers.append(f"conv3x3({f})")
            if i == model.POOL_AFTER:
                layers.append("maxpool2")
        return "-".join([*layers, "global avg pool", "dense"])
    if isinstance(model, RowGRUClassifier):
        return f"GRU({model.hidden_size}) over {height} rows of {width} pixels-dense"
    raise TypeError(f"unknown model {type(model).__name__}")


# ----------------------------------------------------------------------------- image transforms


def shift_images(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translate images [..., H, W] by dy rows (down if > 0) and dx columns (right if > 0).

    Pixels moved in from outside are 0 (background); pixels moved past the border are lost.
    """
    images = np.asarray(images)
    h, w = images.shape[-2:]
    out = np.zeros_like(images)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src_y = slice(max(0, -dy), h - max(0, dy))
    dst_y = slice(max(0, dy), h - max(0, -dy))
    src_x = slice(max(0, -dx), w - max(0, dx))
    dst_x = slice(max(0, dx), w - max(0, -dx))
    out[..., dst_y, dst_x] = images[..., src_y, src_x]
    return out


def pad_images(images: np.ndarray, top: int = 0, bottom: int = 0, left: int = 0,
               right: int = 0) -> np.ndarray:
    """Zero border around images [..., H, W] (a bigger canvas; the digit keeps its scale)."""
    images = np.asarray(images)
    widths = [(0, 0)] * (images.ndim - 2) + [(top, bottom), (left, right)]
    return np.pad(images, widths)


def upsample_images(images: np.ndarray, factor: int, factor_x: int | None = None) -> np.ndarray:
    """Nearest-neighbour upsampling of images [..., H, W]: rows repeated `factor` times,
    columns `factor_x` times (default: `factor`)."""
    images = np.asarray(images)
    factor_x = factor if factor_x is None else factor_x
    return images.repeat(factor, axis=-2).repeat(factor_x, axis=-1)
