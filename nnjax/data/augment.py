"""Random image augmentation in JAX, with the semantics of Keras' ``ImageDataGenerator``.

The thesis trains with ``ImageDataGenerator(shear_range=0.2, zoom_range=0.2,
horizontal_flip=True)``. In Keras these mean:

* ``shear_range``: a shear **angle in degrees**, drawn uniformly from [-s, s] (so 0.2
  is a barely visible 0.2 degrees; the thesis's setting is kept as is);
* ``zoom_range``: independent zoom factors ``zx, zy`` uniform in [1 - z, 1 + z]; a factor
  above 1 samples a larger area (zooms out);
* ``horizontal_flip``: mirror left-right with probability 1/2, after the affine map.

The affine map sends each output pixel to an input position around the image centre,
``input = M @ (output - centre) + centre`` with ``M = Shear @ Zoom``, and samples it
bilinearly with 'nearest' filling outside the image (Keras' defaults: order 1, nearest).
Everything is jit-compatible and works on a whole batch at once.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths (Keras ``ImageDataGenerator`` units).

    Attributes:
      shear_range: maximum shear angle in degrees.
      zoom_range: maximum relative zoom; factors in [1 - z, 1 + z] per axis.
      horizontal_flip: mirror half of the images left-right.
    """

    shear_range: float = 0.2
    zoom_range: float = 0.2
    horizontal_flip: bool = True

    @property
    def active(self) -> bool:
        return bool(self.shear_range or self.zoom_range or self.horizontal_flip)


THESIS_AUGMENTATION = AugmentConfig(shear_range=0.2, zoom_range=0.2, horizontal_flip=True)


def random_transforms(key: jax.Array, batch: int, config: AugmentConfig) -> tuple[jax.Array, jax.Array]:
    """Per-image ``(matrices [B, 2, 2], flip [B] bool)`` in (row, column) coordinates."""
    k_shear, k_zoom, k_flip = jax.random.split(key, 3)
    shear = jnp.deg2rad(
        jax.random.uniform(k_shear, (batch,), minval=-config.shear_range, maxval=config.shear_range)
    )
    zoom = jax.random.uniform(
        k_zoom, (batch, 2), minval=1.0 - config.zoom_range, maxval=1.0 + config.zoom_range
    )
    zx, zy = zoom[:, 0], zoom[:, 1]
    # Keras builds Shear @ Zoom on (x=column, y=row); written here for (row, column).
    matrices = jnp.stack(
        [jnp.stack([jnp.cos(shear) * zy, jnp.zeros_like(zx)], -1), jnp.stack([-jnp.sin(shear) * zy, zx], -1)],
        axis=1,
    )
    if config.horizontal_flip:
        flip = jax.random.bernoulli(k_flip, 0.5, (batch,))
    else:
        flip = jnp.zeros((batch,), bool)
    return matrices, flip


def _warp_one(image: jax.Array, matrix: jax.Array, flip: jax.Array) -> jax.Array:
    """Bilinear sampling of ``image [H, W, C]`` at ``matrix @ (p - centre) + centre``, then flip."""
    height, width = image.shape[:2]
    rows, cols = jnp.meshgrid(
        jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij"
    )
    cr, cc = (height - 1) / 2.0, (width - 1) / 2.0
    r = matrix[0, 0] * (rows - cr) + matrix[0, 1] * (cols - cc) + cr
    c = matrix[1, 0] * (rows - cr) + matrix[1, 1] * (cols - cc) + cc
    r = jnp.clip(r, 0.0, height - 1.0)  # 'nearest' fill: clamp to the border
    c = jnp.clip(c, 0.0, width - 1.0)
    r0 = jnp.floor(r)
    c0 = jnp.floor(c)
    fr = (r - r0)[..., None]
    fc = (c - c0)[..., None]
    r0i = r0.astype(jnp.int32)
    c0i = c0.astype(jnp.int32)
    r1i = jnp.minimum(r0i + 1, height - 1)
    c1i = jnp.minimum(c0i + 1, width - 1)
    img = image.astype(jnp.float32)
    top = img[r0i, c0i] * (1 - fc) + img[r0i, c1i] * fc
    bottom = img[r1i, c0i] * (1 - fc) + img[r1i, c1i] * fc
    out = top * (1 - fr) + bottom * fr
    return jnp.where(flip, out[:, ::-1], out)


def apply_transforms(images: jax.Array, matrices: jax.Array, flip: jax.Array) -> jax.Array:
    """Warp ``images [B, H, W, C]`` (any numeric dtype) -> float32 ``[B, H, W, C]``."""
    return jax.vmap(_warp_one)(images, matrices, flip)


def random_augment(
    key: jax.Array, images: jax.Array, config: AugmentConfig = THESIS_AUGMENTATION
) -> jax.Array:
    """Randomly sheared, zoomed and flipped copies of ``images [B, H, W, C]`` (float32 out).

    Values keep their range (apply before or after the weights' preprocessing: bilinear
    sampling commutes with per-channel affine scaling).
    """
    if not config.active:
        return images.astype(jnp.float32)
    matrices, flip = random_transforms(key, images.shape[0], config)
    return apply_transforms(images, matrices, flip)
