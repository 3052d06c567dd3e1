"""The encoders' hand-written gradients: BatchNorm against flax's
nn.BatchNorm under autodiff (values, gradients, running statistics), the
3x3/2 max pool against PyTorch's MaxPool2d (ties included), and OSNet's
rematerialisation (same gradients as without, and the activation memory
that lets the two-view batch 64 at 256x128 fit in 4 GiB)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn import encoders
from idlearn.encoders import conv, osnet
from idlearn.encoders.remat import recompute_in_backward


def _bn_outputs(module, x, ws):
  """(loss, grads wrt (x, scale, bias), updated batch stats) of module."""
  variables = module.init(jax.random.key(0), x)
  stats = jax.tree.map(lambda a: a + 0.5, variables["batch_stats"])

  def loss(x, params):
    y, upd = module.apply(
      {"params": params, "batch_stats": stats}, x, mutable=["batch_stats"]
    )
    return jnp.sum(jnp.sin(y) * ws), upd["batch_stats"]

  (value, new_stats), grads = jax.value_and_grad(
    loss, argnums=(0, 1), has_aux=True
  )(x, variables["params"])
  return value, grads, new_stats


@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_matches_flax(relu):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(1.0, 2.0, size=(3, 5, 4, 6)), jnp.float32)
  ws = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  ours = conv.batch_norm(True, jnp.float32, relu=relu)
  flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9)
  got = _bn_outputs(ours, x, ws)
  want = _bn_outputs(
    nn.Sequential([flax_bn, nn.relu] if relu else [flax_bn]), x, ws
  )
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  gx, gp = got[1]
  wx, wp = want[1]
  np.testing.assert_allclose(gx, wx, rtol=1e-4, atol=1e-5)
  # nn.Sequential nests the flax layer's variables one level down.
  wp = wp.get("layers_0", wp)
  for key in ("scale", "bias"):
    np.testing.assert_allclose(gp[key], wp[key], rtol=1e-4, atol=1e-5)
  new = got[2]
  ref_stats = want[2].get("layers_0", want[2])
  for key in ("mean", "var"):
    np.testing.assert_allclose(new[key], ref_stats[key], rtol=1e-5)
  # And the statistics against float64 NumPy: biased variance, momentum 0.9.
  x64 = np.asarray(x, np.float64).reshape(-1, 6)
  np.testing.assert_allclose(new["mean"], 0.9 * 0.5 + 0.1 * x64.mean(0))
  np.testing.assert_allclose(
    new["var"], 0.9 * 1.5 + 0.1 * x64.var(0), rtol=1e-5
  )


def test_batch_norm_eval_uses_running_statistics():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
  bn = conv.batch_norm(False, jnp.float32, relu=True)
  params = {"scale": np.full(4, 2.0, np.float32), "bias": np.ones(4, "f4")}
  stats = {"mean": np.full(4, 0.5, "f4"), "var": np.full(4, 4.0, "f4")}
  y = bn.apply({"params": params, "batch_stats": stats}, x)
  want = np.maximum((x - 0.5) / np.sqrt(4.0 + 1e-5) * 2.0 + 1.0, 0)
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def test_max_pool_matches_torch_with_ties():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(2)
  # Small integers after a ReLU: many windows hold several equal maxima
  # (zeros above all), where PyTorch sends the gradient to the first one.
  x = np.maximum(rng.integers(-3, 3, size=(2, 7, 6, 3)), 0).astype("f4")
  g = rng.normal(size=(2, 4, 3, 3)).astype(np.float32)
  y, vjp = jax.vjp(conv.max_pool_3x3_s2, jnp.asarray(x))
  (dx,) = vjp(jnp.asarray(g))
  xt = torch.from_numpy(x).permute(0, 3, 1, 2).requires_grad_()
  yt = torch.nn.functional.max_pool2d(xt, 3, 2, 1)
  yt.backward(torch.from_numpy(g).permute(0, 3, 1, 2))
  np.testing.assert_array_equal(y, yt.detach().permute(0, 2, 3, 1).numpy())
  np.testing.assert_allclose(
    dx, xt.grad.permute(0, 2, 3, 1).numpy(), rtol=1e-6, atol=1e-6
  )


class _Block(nn.Module):
  """One OSNet block (its four streams rematerialised inside it too)."""

  remat: bool

  @nn.compact
  def __call__(self, x, train=True):
    block = osnet._OSBlock(64, train=train, remat=self.remat)
    return recompute_in_backward(block, x) if self.remat else block(x)


def _grads(model, x):
  """Gradients of a training loss wrt params and input, new statistics."""
  v = model.init(jax.random.key(0, impl="rbg"), x[:1])

  def loss(params, x):
    # Two calls threading the statistics, as a two-view step does.
    total, stats = 0.0, v["batch_stats"]
    for scale in (1.0, 0.5):
      out, upd = model.apply(
        {"params": params, "batch_stats": stats},
        x * scale,
        train=True,
        mutable=["batch_stats"],
      )
      emb = out[0] if isinstance(out, tuple) else out
      total += jnp.sum(jnp.sin(emb))
      stats = jax.lax.stop_gradient(upd["batch_stats"])  # as Network
    return total, stats

  return jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(v["params"], x)


@pytest.mark.parametrize(
  "make",
  [
    lambda remat: _Block(remat),
    lambda remat: encoders.get_encoder("resnet_tiny", remat=remat),
  ],
  ids=["osnet_block", "resnet_tiny"],
)
def test_remat_same_gradients_and_statistics(make):
  x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 16, 8, 16)))
  if not isinstance(make(False), _Block):
    x = x[..., :3]
  plain, lean = (_grads(make(r), x.astype(jnp.float32)) for r in (0, 1))
  for a, b in zip(*map(jax.tree.leaves, (plain, lean)), strict=True):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_osnet_two_view_batch_64_fits_in_4_gib():
  """XLA's temp memory of OSNet's fwd+bwd, at a shape that scales: it is
  linear in images x pixels, and the two-view SSL step at batch 64,
  256x128 is 128 images of 4x these pixels (about 3 GB measured there)."""
  shape = (4, 128, 64, 3)
  model = encoders.get_encoder("osnet_x1_0")
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  v = jax.eval_shape(model.init, jax.random.key(0, impl="rbg"), x)

  def loss(params, stats, x):
    (emb, _), upd = model.apply(
      {"params": params, "batch_stats": stats},
      x,
      train=True,
      mutable=["batch_stats"],
    )
    return jnp.sum(emb), upd

  step = jax.jit(jax.grad(loss, has_aux=True))
  compiled = step.lower(v["params"], v["batch_stats"], x).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  assert temp * (2 * 64 / shape[0]) * 4 <= 4 * 2**30, temp
