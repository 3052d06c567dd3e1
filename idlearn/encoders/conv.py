"""2-D convolution with a CPU fast path, and the normalisation layers we use.

XLA's CPU convolution collapses to ~1.5 GFLOP/s when the feature map is
tiny (e.g. the 4x2 map of ResNet's last stage at 128x64 input), and the
input gradient of a strided conv whose output is tiny is just as slow.
`conv2d` therefore computes every convolution whose maps are small as an
im2col matrix product (one `dot_general`; its gradients are slices, pads
and matrix products, never a convolution) and uses XLA's convolution only
where the maps are large enough for it to be fast. Depthwise convolutions
are computed as a sum of shifted, per-channel products.

Padding is symmetric and explicit, as in PyTorch (`padding=k // 2`), not
flax's "SAME", which pads stride-2 convs asymmetrically and silently breaks
weight import.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Dtype = Any

# XLA's own convolution is used only when every map (input and output) has
# both spatial sides >= this; smaller maps take the matmul path.
MIN_NATIVE_SIDE = 8

IMPLS = ("auto", "native", "matmul")

# He-normal with fan_out, as torchvision and torchreid initialise convs.
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _out_size(size: int, k: int, stride: int, padding: int) -> int:
  return (size + 2 * padding - k) // stride + 1


def _taps(
  x: jax.Array, k: int, stride: int, padding: int, pad_value: float = 0.0
) -> list[jax.Array]:
  """The k*k shifted (and strided) views of padded x, row-major over taps.

  Args:
    x: [n, h, w, c].
    pad_value: value of the padding.
  Returns: k*k arrays [n, ho, wo, c]; tap (i, j) is element i * k + j.
  """
  n, h, w, c = x.shape
  ho, wo = _out_size(h, k, stride, padding), _out_size(w, k, stride, padding)
  if padding:
    pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    x = jnp.pad(x, pads, constant_values=pad_value)
  out = []
  for i in range(k):
    for j in range(k):
      end = (n, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, c)
      out.append(lax.slice(x, (0, i, j, 0), end, (1, stride, stride, 1)))
  return out


def _matmul_conv(x, kernel, stride, padding):
  """im2col: [n, ho, wo, k*k*cin] @ [k*k*cin, cout] as one dot_general."""
  k = kernel.shape[0]
  if k == 1:
    cols = x[:, ::stride, ::stride, :] if stride > 1 else x
  else:
    cols = jnp.concatenate(_taps(x, k, stride, padding), axis=-1)
  w = kernel.reshape(-1, kernel.shape[-1])  # HWIO -> [(i, j, cin), cout]
  return lax.dot_general(cols, w, (((3,), (0,)), ((), ())))


def _depthwise_conv(x, kernel, stride, padding):
  """Sum over taps of shifted x times per-channel weights; kernel [k,k,1,c]."""
  if stride == 1 and padding < kernel.shape[0]:
    return _depthwise_s1(x, kernel, padding)
  return _depthwise_taps(x, kernel, stride, padding)


def _depthwise_taps(x, kernel, stride, padding):
  k = kernel.shape[0]
  taps = _taps(x, k, stride, padding)
  out = taps[0] * kernel[0, 0, 0]
  for t in range(1, k * k):
    out = out + taps[t] * kernel[t // k, t % k, 0]
  return out


# Stride-1 depthwise conv with a hand-written gradient. Autodiff of the tap
# sum gives dx as nine padded cotangents, which XLA fuses into the next
# matmul's operands and recomputes there (a 1x1 + depthwise pair ran 4x
# slower than its parts); here dx is itself a depthwise conv (flipped
# kernel) and dw nine reductions.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _depthwise_s1(x, kernel, padding):
  return _depthwise_taps(x, kernel, 1, padding)


def _depthwise_s1_fwd(x, kernel, padding):
  return _depthwise_taps(x, kernel, 1, padding), (x, kernel)


def _depthwise_s1_bwd(padding, res, g):
  x, kernel = res
  k = kernel.shape[0]
  dx = _depthwise_taps(g, kernel[::-1, ::-1], 1, k - 1 - padding)
  taps = _taps(x, k, 1, padding)
  dw = jnp.stack([jnp.einsum("nhwc,nhwc->c", t, g) for t in taps])
  return dx, dw.reshape(kernel.shape).astype(kernel.dtype)


_depthwise_s1.defvjp(_depthwise_s1_fwd, _depthwise_s1_bwd)


def _native_conv(x, kernel, stride, padding, groups):
  return lax.conv_general_dilated(
    x,
    kernel,
    (stride, stride),
    ((padding, padding), (padding, padding)),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=groups,
  )


def use_native(
  in_hw: tuple[int, int], k: int, stride: int, padding: int
) -> bool:
  """Whether "auto" gives a conv on an in_hw map to XLA's own convolution."""
  if k == 1:
    return False  # a 1x1 conv is a plain matmul; dot_general is never slower
  out_hw = [_out_size(s, k, stride, padding) for s in in_hw]
  return min(*in_hw, *out_hw) >= MIN_NATIVE_SIDE


def conv2d(
  x: jax.Array,
  kernel: jax.Array,
  *,
  stride: int = 1,
  padding: int = 0,
  groups: int = 1,
  impl: str = "auto",
) -> jax.Array:
  """PyTorch-semantics 2-D convolution in NHWC.

  Args:
    x: [n, h, w, cin] input.
    kernel: [k, k, cin // groups, cout] (HWIO, as flax's nn.Conv).
    stride: spatial stride.
    padding: symmetric zero padding on both spatial sides.
    groups: 1 (dense) or cin (depthwise, cout == cin).
    impl: "auto" (matmul for small maps, 1x1 and depthwise convs, XLA's
      convolution otherwise), "native" (always XLA's convolution) or
      "matmul" (never XLA's convolution).
  Returns:
    [n, ho, wo, cout] with ho = (h + 2 * padding - k) // stride + 1.
  """
  if impl not in IMPLS:
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
  k, k2, cin_g, cout = kernel.shape
  cin = x.shape[-1]
  if k != k2 or cin_g * groups != cin:
    raise ValueError(
      f"kernel shape {kernel.shape} does not fit input channels {cin} "
      f"with groups={groups}"
    )
  if groups not in (1, cin) or (groups > 1 and cout != cin):
    raise ValueError(f"groups must be 1 or depthwise, got {groups}")
  if impl == "native" or (
    impl == "auto"
    and groups == 1
    and use_native(x.shape[1:3], k, stride, padding)
  ):
    return _native_conv(x, kernel, stride, padding, groups)
  if groups > 1:
    return _depthwise_conv(x, kernel, stride, padding)
  return _matmul_conv(x, kernel, stride, padding)


class Conv(nn.Module):
  """Conv layer over `conv2d`; params as flax nn.Conv ("kernel" HWIO, "bias").

  Attributes:
    features: output channels.
    kernel_size: square kernel side.
    strides: spatial stride.
    padding: symmetric zero padding (PyTorch convention).
    groups: 1 or the input channel count (depthwise).
    use_bias: add a learned bias.
    dtype: compute dtype; params stay float32.
    impl: see `conv2d`.
  """

  features: int
  kernel_size: int = 1
  strides: int = 1
  padding: int = 0
  groups: int = 1
  use_bias: bool = False
  dtype: Dtype = jnp.float32
  impl: str = "auto"
  kernel_init: Callable = kaiming_fan_out

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[n, h, w, cin] -> [n, ho, wo, features]."""
    k = self.kernel_size
    shape = (k, k, x.shape[-1] // self.groups, self.features)
    kernel = self.param("kernel", self.kernel_init, shape, jnp.float32)
    y = conv2d(
      x.astype(self.dtype),
      kernel.astype(self.dtype),
      stride=self.strides,
      padding=self.padding,
      groups=self.groups,
      impl=self.impl,
    )
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,))
      y = y + bias.astype(self.dtype)
    return y


def batch_norm(train: bool, dtype: Dtype, name: str | None = None, **kw):
  """BatchNorm with PyTorch's defaults (momentum 0.1, eps 1e-5)."""
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=0.9,
    epsilon=1e-5,
    dtype=dtype,
    name=name,
    **kw,
  )


def instance_norm(dtype: Dtype, name: str | None = None):
  """InstanceNorm2d(affine=True) of PyTorch: per-sample, per-channel stats."""
  # Two-pass variance: E[x^2] - E[x]^2 cancels badly where |mean| >> std,
  # which deep random or pretrained nets reach (measured 1e-4 relative drift
  # vs PyTorch on ResNet-50-IBN-a).
  return nn.InstanceNorm(
    epsilon=1e-5, dtype=dtype, name=name, use_fast_variance=False
  )


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """MaxPool2d(3, stride=2, padding=1); padding never wins the max.

  A max over 9 shifted views rather than reduce_window: the gradient of
  XLA's CPU reduce_window max (select_and_scatter) is ~25x slower.
  """
  return functools.reduce(jnp.maximum, _taps(x, 3, 2, 1, -jnp.inf))


class GeM(nn.Module):
  """Generalised-mean pooling (Radenovic et al., 2018) with a learned p.

  [n, h, w, c] -> [n, c]: (mean over h, w of clip(x, eps)^p)^(1/p).
  p = 1 is average pooling; large p approaches max pooling.
  """

  p: float = 3.0
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    p = self.param("p", nn.initializers.constant(self.p), (1,))
    x = jnp.clip(x.astype(jnp.float32), self.eps) ** p
    return x.mean(axis=(1, 2)) ** (1.0 / p)


def global_pool(x: jax.Array, pooling: str) -> jax.Array:
  """[n, h, w, c] -> float32 [n, c] by "avg" or "gem" (call inside compact)."""
  if pooling == "avg":
    return x.astype(jnp.float32).mean(axis=(1, 2))
  if pooling == "gem":
    return GeM(name="gem")(x)
  raise ValueError(f"pooling must be 'avg' or 'gem', got {pooling!r}")
