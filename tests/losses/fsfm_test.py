"""FSFM's objectives against NumPy float64 references: patchify (the ViT's
patch order), the norm-pix masked MSE (all masked patches and the covered
region), SimSiam's negative cosine with a stopped target."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn import losses
from idlearn.encoders import vit

RNG = np.random.default_rng(0)
N, H, W, P = 3, 16, 24, 8  # 2 x 3 patches of 8 x 8 x 3
L, D = (H // P) * (W // P), P * P * 3
IMAGES = RNG.normal(size=(N, H, W, 3))
PRED = RNG.normal(size=(N, L, D))
MASK = RNG.random((N, L)) < 0.6
MASK[:, 0] = True


def _patchify_ref(images, p):
  n, h, w, c = images.shape
  out = np.zeros((n, (h // p) * (w // p), p * p * c))
  for i in range(h // p):
    for j in range(w // p):
      block = images[:, i * p : (i + 1) * p, j * p : (j + 1) * p]
      out[:, i * (w // p) + j] = block.reshape(n, -1)
  return out


def _mse_ref(pred, target, mask, norm_pix):
  if norm_pix:
    mean = target.mean(-1, keepdims=True)
    var = target.var(-1, ddof=1, keepdims=True)  # MAE: torch's unbiased .var
    target = (target - mean) / np.sqrt(var + 1e-6)
  err = ((pred - target) ** 2).mean(-1)
  return (err * mask).sum() / mask.sum()


def test_patchify_is_the_vit_patch_order():
  got = np.asarray(jax.jit(losses.patchify, static_argnums=1)(IMAGES, P))
  ref = _patchify_ref(IMAGES, P).astype(np.float32)
  np.testing.assert_array_equal(got, ref)  # a pure re-layout
  # the ViT's patch embedding is patchify @ kernel + bias, patch by patch
  embed = vit._PatchEmbed(5, P)
  x = jnp.asarray(IMAGES, jnp.float32)
  v = embed.init(jax.random.key(0), x)
  tokens = np.asarray(embed.apply(v, x)).reshape(N, L, 5)
  kernel = np.asarray(v["params"]["proj"]["kernel"]).reshape(D, 5)
  np.testing.assert_allclose(tokens, got @ kernel, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="not divisible"):
    losses.patchify(IMAGES[:, :15], P)


@pytest.mark.parametrize("norm_pix", [True, False])
def test_masked_reconstruction_matches_reference(norm_pix):
  target = _patchify_ref(IMAGES, P)
  fn = jax.jit(losses.masked_reconstruction, static_argnames="norm_pix")
  loss, aux = fn(PRED, target, MASK, norm_pix=norm_pix)
  want = _mse_ref(PRED, target, MASK, norm_pix)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(float(aux["patches"]), MASK.sum() / N)
  # only the masked patches' predictions get a gradient
  grad = jax.grad(lambda p: fn(p, target, MASK, norm_pix=norm_pix)[0])(PRED)
  assert np.all(np.asarray(grad)[~MASK] == 0)
  assert np.all(np.abs(np.asarray(grad)[MASK]).sum(-1) > 0)
  # the region term is the same function on a sub-mask (float weights too)
  region = MASK & (np.arange(L) < 3)
  got, _ = fn(PRED, target, region.astype(np.float32), norm_pix=norm_pix)
  want = _mse_ref(PRED, target, region, norm_pix)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_masked_reconstruction_edge_cases():
  target = _patchify_ref(IMAGES, P)
  empty, _ = losses.masked_reconstruction(PRED, target, np.zeros((N, L)))
  assert float(empty) == 0.0
  # a perfect prediction of the standardised patches costs ~0
  mean = target.mean(-1, keepdims=True)
  std = np.sqrt(target.var(-1, ddof=1, keepdims=True) + 1e-6)
  perfect, _ = losses.masked_reconstruction((target - mean) / std, target, MASK)
  assert float(perfect) < 1e-10
  with pytest.raises(ValueError, match="mask"):
    losses.masked_reconstruction(PRED, target, MASK[:, :2])


def test_negative_cosine_matches_reference_and_stops_the_target():
  p, z = RNG.normal(size=(6, 8)), RNG.normal(size=(6, 8))
  fn = jax.jit(losses.negative_cosine)
  loss, aux = fn(p, z)
  cos = (p * z).sum(1) / np.linalg.norm(p, axis=1) / np.linalg.norm(z, axis=1)
  np.testing.assert_allclose(float(loss), -0.5 * cos.mean(), rtol=1e-5)
  np.testing.assert_allclose(float(aux["cos"]), cos.mean(), rtol=1e-5)
  gp, gz = jax.grad(lambda a, b: fn(a, b)[0], argnums=(0, 1))(p, z)
  assert np.all(np.asarray(gz) == 0) and np.abs(np.asarray(gp)).sum() > 0
  same, _ = fn(p, 3 * p)  # scale-free: identical directions give -1/2
  np.testing.assert_allclose(float(same), -0.5, rtol=1e-6)
  zero, _ = fn(np.zeros((2, 8)), z[:2])  # finite at the zero vector
  grads = jax.grad(lambda a: fn(a, z[:2])[0])(np.zeros((2, 8)))
  assert np.isfinite(float(zero)) and np.all(np.isfinite(np.asarray(grads)))
