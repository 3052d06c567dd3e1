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
  return _dense(cols, w)


# [n, h, w, k] @ [k, c] with a hand-written gradient. Autodiff writes dW as
# a dot of g with cols that XLA:CPU lays out as [c, n*h*w] @ [n*h*w, k]:
# it materialises g transposed, inside the (already memory-bound) fusion
# that produces g, at ~0.3 GB/s (~1/7 of ResNet-50's fwd+bwd time). The
# same product written as cols^T @ g, contracting the leading dim of both
# operands, runs as one Eigen dot on the operands as they lie.
@jax.custom_vjp
def _dense(cols, w):
  return lax.dot_general(cols, w, (((3,), (0,)), ((), ())))


def _dense_fwd(cols, w):
  return _dense(cols, w), (cols, w)


def _dense_bwd(res, g):
  cols, w = res
  dcols = lax.dot_general(g, w, (((3,), (1,)), ((), ())))
  flat = (-1, cols.shape[-1]), (-1, g.shape[-1])
  dw = lax.dot_general(
    cols.reshape(flat[0]), g.reshape(flat[1]), (((0,), (0,)), ((), ()))
  )
  return dcols.astype(cols.dtype), dw.astype(w.dtype)


_dense.defvjp(_dense_fwd, _dense_bwd)


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
  dw = _tap_sums(_taps(x, k, 1, padding), g)
  return dx, dw.reshape(kernel.shape).astype(kernel.dtype)


def _tap_sums(taps: list[jax.Array], g: jax.Array) -> jax.Array:
  """[len(taps), c] float32 sums over n, h, w of each tap times g.

  XLA:CPU hands every reduction to a YNNPACK kernel that cannot read a
  padded, shifted view in place, so a plain sum(tap * g) first writes
  each shifted tap out in full (8 copies of x, 6-12x slower). Summing
  groups of up to 8 images with elementwise adds instead is one loop
  fusion per tap that reads x and g where they lie; only that 1/8-size
  partial sum reaches the reduction.

  Args:
    taps: [n, h, w, c] shifted views of the input (`_taps`).
    g: [n, h, w, c] output gradient.
  """
  n, c = g.shape[0], g.shape[-1]
  m = max(d for d in range(1, 9) if n % d == 0)
  parts = []
  for t in taps:
    p = t.astype(jnp.float32) * g.astype(jnp.float32)
    p = p.reshape(n // m, m, *p.shape[1:])
    parts.append(functools.reduce(jnp.add, [p[:, i] for i in range(m)]))
  return jnp.stack(parts).reshape(len(taps), -1, c).sum(axis=1)


_depthwise_s1.defvjp(_depthwise_s1_fwd, _depthwise_s1_bwd)


def _xla_conv(x, kernel, stride, padding, groups=1):
  return lax.conv_general_dilated(
    x,
    kernel,
    (stride, stride),
    ((padding, padding), (padding, padding)),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=groups,
  )


def _native_conv(x, kernel, stride, padding, groups):
  # The backend is fixed when the function is traced: the chunked weight
  # gradient is a CPU workaround; GPU/TPU keep XLA's convolution as is.
  if groups == 1 and jax.default_backend() == "cpu":
    return _cpu_conv(x, kernel, stride, padding)
  return _xla_conv(x, kernel, stride, padding, groups)


# Bytes of input per batch chunk of the CPU weight gradient (~ half of one
# core's L2); see `_cpu_conv`.
DW_CHUNK_BYTES = 1 << 19


def _dw_chunk(x: jax.Array) -> int:
  """Images per chunk of the CPU weight gradient for input x [n, h, w, c]."""
  per_image = x[0].size * x.dtype.itemsize
  return max(1, min(x.shape[0], DW_CHUNK_BYTES // per_image))


# XLA's CPU convolution with a batch-chunked weight gradient. XLA:CPU runs
# the weight gradient of a convolution (a correlation of x with the output
# gradient, contracting over n * ho * wo) 1.5-3x slower than the forward
# pass once the batch is large (measured 18-40 GFLOP/s vs 60-100 at batch
# 64), and its speed recovers when the same convolution runs on a few
# images at a time. dW is therefore the sum of XLA's own weight gradients
# over batch chunks of ~DW_CHUNK_BYTES of input. The chunks are unrolled:
# inside a loop (lax.scan) XLA:CPU abandons its Eigen convolution for a
# ~2 GFLOP/s generic one.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _cpu_conv(x, kernel, stride, padding):
  return _xla_conv(x, kernel, stride, padding)


def _cpu_conv_fwd(x, kernel, stride, padding):
  return _xla_conv(x, kernel, stride, padding), (x, kernel)


def _cpu_conv_bwd(stride, padding, res, g):
  x, kernel = res

  def conv_of_x(x):
    return _xla_conv(x, kernel, stride, padding)

  (dx,) = jax.linear_transpose(conv_of_x, x)(g)
  m, dw = _dw_chunk(x), None
  for i in range(0, x.shape[0], m):
    xi = x[i : i + m]
    (dwi,) = jax.linear_transpose(
      lambda w, xi=xi: _xla_conv(xi, w, stride, padding), kernel
    )(g[i : i + m])
    dw = dwi if dw is None else dw + dwi
  return dx, dw


_cpu_conv.defvjp(_cpu_conv_fwd, _cpu_conv_bwd)


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
    impl: "auto" (on CPU: matmul for small maps, 1x1 and depthwise convs,
      XLA's convolution otherwise; on GPU / TPU: always XLA's), "native"
      (always XLA's convolution) or "matmul" (never XLA's convolution).
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
  # The matmul paths work around XLA:CPU; GPUs and TPUs run their own
  # convolutions (cuDNN), depthwise and 1x1 included (fixed at trace time).
  on_cpu = jax.default_backend() == "cpu"
  if impl == "native" or (
    impl == "auto"
    and (
      not on_cpu
      or (groups == 1 and use_native(x.shape[1:3], k, stride, padding))
    )
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


class BatchNorm(nn.Module):
  """nn.BatchNorm (same variables and numbers) with a hand-written gradient.

  Variables as flax's: params "scale", "bias"; batch_stats "mean", "var"
  (biased variance, updated as momentum * old + (1 - momentum) * new).
  Statistics in float32 over all axes but the last, variance as
  E[x^2] - E[x]^2 clipped at 0, as flax's default.

  In training, autodiff of the normalisation keeps x - mean as an extra
  map and reads x, g and the saved maps in more passes than needed (BN
  was ~30% of ResNet-50's CPU fwd+bwd); the VJP here saves x and, with
  `relu`, the output only, and computes dx in one reduction pass (sum g,
  sum g * xhat) and one elementwise pass. `relu` fuses a following ReLU
  so that its mask comes from the saved output.

  Attributes:
    use_running_average: normalise with the running statistics (eval).
    momentum: running-average decay.
    epsilon: added to the variance.
    dtype: output dtype (statistics are float32).
    use_bias, use_scale: learn a shift / a scale.
    relu: apply max(., 0) to the output.
  """

  use_running_average: bool = False
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Dtype | None = None
  use_bias: bool = True
  use_scale: bool = True
  relu: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[..., c] -> [..., c]."""
    c = x.shape[-1]
    dtype = self.dtype or x.dtype
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,))
    ra_var = self.variable("batch_stats", "var", jnp.ones, (c,))
    scale = jnp.ones((c,), jnp.float32)
    bias = jnp.zeros((c,), jnp.float32)
    if self.use_scale:
      scale = self.param("scale", nn.initializers.ones, (c,))
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (c,))
    if self.use_running_average:
      mul = lax.rsqrt(ra_var.value + self.epsilon) * scale
      y = (x - ra_mean.value) * mul + bias
      return (nn.relu(y) if self.relu else y).astype(dtype)
    y, mean, var = _bn_train(x, scale, bias, self.epsilon, self.relu, dtype)
    if not self.is_initializing():
      m = self.momentum
      ra_mean.value = m * ra_mean.value + (1 - m) * mean
      ra_var.value = m * ra_var.value + (1 - m) * var
    return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _bn_train(x, scale, bias, eps, relu, dtype):
  """Batch-statistics BN: (y [..., c], mean [c], var [c]); see BatchNorm."""
  return _bn_train_fwd(x, scale, bias, eps, relu, dtype)[0]


def _bn_train_fwd(x, scale, bias, eps, relu, dtype):
  axes = tuple(range(x.ndim - 1))
  xf = x.astype(jnp.float32)
  mean = xf.mean(axes)
  var = jnp.maximum(0.0, jnp.square(xf).mean(axes) - jnp.square(mean))
  inv = lax.rsqrt(var + eps)
  y = (xf - mean) * (inv * scale) + bias
  y = (jnp.maximum(y, 0) if relu else y).astype(dtype)
  return (y, mean, var), (x, mean, inv, scale, y if relu else None)


def _bn_train_bwd(eps, relu, dtype, res, gs):
  del eps, dtype
  x, mean, inv, scale, y = res
  g, g_mean, g_var = gs
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  g = g.astype(jnp.float32)
  if relu:
    g = jnp.where(y > 0, g, 0.0)
  centred = x.astype(jnp.float32) - mean
  xhat = centred * inv
  g_bias = g.sum(axes)
  g_scale = (g * xhat).sum(axes)
  # d/dx of (x - mean) * inv through mean and var, plus the direct
  # cotangents of the returned statistics (zero in practice).
  dx = (scale * inv) * (g - (g_bias + xhat * g_scale) / count)
  dx = dx + (g_mean + 2 * g_var * centred) / count
  return dx.astype(x.dtype), g_scale, g_bias


_bn_train.defvjp(_bn_train_fwd, _bn_train_bwd)


def batch_norm(train: bool, dtype: Dtype, name: str | None = None, **kw):
  """BatchNorm with PyTorch's defaults (momentum 0.1, eps 1e-5).

  kw: `BatchNorm` attributes, e.g. relu=True, use_bias=False.
  """
  return BatchNorm(
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


@jax.custom_vjp
def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """MaxPool2d(3, stride=2, padding=1); padding never wins the max.

  A max over 9 shifted views rather than reduce_window: the gradient of
  XLA's CPU reduce_window max (select_and_scatter) is ~25x slower. The
  gradient is hand-written too (autodiff of the chain of maxima fused into
  a ~3x slower pass that recomputes it); as PyTorch's, it goes to the first
  maximal tap of each window, where autodiff would split ties (common
  after a ReLU) evenly.

  Args:
    x: [n, h, w, c].
  Returns: [n, ceil(h / 2), ceil(w / 2), c].
  """
  return functools.reduce(jnp.maximum, _taps(x, 3, 2, 1, -jnp.inf))


def _max_pool_fwd(x):
  taps = _taps(x, 3, 2, 1, -jnp.inf)
  best, arg = taps[0], jnp.zeros(taps[0].shape, jnp.int8)
  for t in range(1, 9):
    wins = taps[t] > best  # strict: ties keep the earlier tap
    best = jnp.where(wins, taps[t], best)
    arg = jnp.where(wins, jnp.int8(t), arg)
  return best, (arg, x.shape)


def _max_pool_bwd(res, g):
  arg, (n, h, w, c) = res
  ho, wo = g.shape[1:3]

  def next_row(a, axis):  # a[k + 1] along axis, 0 past the end
    pads = [(0, 0)] * 4
    pads[axis] = (0, 1)
    return lax.slice_in_dim(jnp.pad(a, pads), 1, a.shape[axis] + 1, axis=axis)

  # Input row 2a + p is tap i of output row a + d, for (i, d) below; same
  # for columns. Each of the four phases of dx sums 1, 2 or 4 masked g's.
  sources = (((1, 0),), ((2, 0), (0, 1)))
  phases = []
  for p in (0, 1):
    row = []
    for q in (0, 1):
      acc = 0
      for i, di in sources[p]:
        for j, dj in sources[q]:
          term = jnp.where(arg == 3 * i + j, g, 0)
          term = next_row(term, 1) if di else term
          acc = acc + (next_row(term, 2) if dj else term)
      row.append(acc)
    phases.append(jnp.stack(row, axis=3))  # [n, ho, wo, 2 (q), c]
  dx = jnp.stack(phases, axis=2).reshape(n, 2 * ho, 2 * wo, c)
  return (dx[:, :h, :w],)


max_pool_3x3_s2.defvjp(_max_pool_fwd, _max_pool_bwd)


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
