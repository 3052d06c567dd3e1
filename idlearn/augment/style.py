"""Batch Styles Standardization (BSS; Scalbert et al. 2024).

Fourier view of style: the low-frequency amplitude spectrum carries an
image's "style" (colour, illumination, texture statistics), the phase its
content. BSS gives every image of a batch the same style, so that an SSL
objective cannot separate samples by style: one image of the batch is drawn
as the reference and the low-frequency amplitudes of all images are
replaced by the reference's (amplitude swap in a centred window whose size
is drawn per batch), phases kept.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def low_frequency_mask(shape: tuple[int, int], ratio: jax.Array) -> jax.Array:
  """bool [h, w] (unshifted FFT layout): |f_y| <= ratio*h/2, |f_x| <= ratio*w/2.

  Args:
    shape: (h, w).
    ratio: scalar in [0, 1], side of the window over the full spectrum.
  """
  h, w = shape
  fy = jnp.abs(jnp.fft.fftfreq(h) * h)[:, None]  # integer frequencies
  fx = jnp.abs(jnp.fft.fftfreq(w) * w)[None, :]
  return (fy <= ratio * h / 2) & (fx <= ratio * w / 2)


def standardize_styles(
  key: jax.Array,
  images: jax.Array,
  ratio_range: tuple[float, float] = (0.05, 0.2),
  *,
  spatial_axes: tuple[int, int] = (1, 2),
) -> jax.Array:
  """Gives all images the low-frequency amplitude of one random image.

  Args:
    key: PRNG key (draws the reference and the window ratio).
    images: float [b, h, w, c] in [0, 1] (or [b, c, h, w] with
      spatial_axes=(2, 3)); the batch axis is 0.
    ratio_range: window side as a fraction of the spectrum, ~ U(range).
    spatial_axes: the two image axes.
  Returns:
    float, the shape of images, clipped to [0, 1].
  """
  b = images.shape[0]
  h, w = (images.shape[a] for a in spatial_axes)
  k_ref, k_ratio = jax.random.split(key)
  ref = jax.random.randint(k_ref, (), 0, b)
  ratio = jax.random.uniform(
    k_ratio, (), minval=ratio_range[0], maxval=ratio_range[1]
  )
  spec = jnp.fft.fft2(images, axes=spatial_axes)  # complex, images' shape
  amp, phase = jnp.abs(spec), jnp.angle(spec)
  shape = [1] * images.ndim
  shape[spatial_axes[0]], shape[spatial_axes[1]] = h, w
  mask = low_frequency_mask((h, w), ratio).reshape(shape)
  amp = jnp.where(mask, amp[ref][None], amp)
  out = jnp.fft.ifft2(amp * jnp.exp(1j * phase), axes=spatial_axes).real
  return jnp.clip(out, 0.0, 1.0).astype(images.dtype)
