"""barlow_twins against a float64 NumPy reference."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn.losses import redundancy

RNG = np.random.default_rng(3)


def ref_barlow_twins(z1, z2, lam, eps=1e-5):
  def standardize(z):
    z = np.asarray(z, np.float64)
    return (z - z.mean(0)) / np.sqrt(z.var(0) + eps)  # biased variance

  c = standardize(z1).T @ standardize(z2) / len(z1)
  off = c[~np.eye(len(c), dtype=bool)]
  return np.sum((1 - np.diag(c)) ** 2) + lam * np.sum(off**2)


# One compiled value-and-grad, lambda traced.
_vg = jax.jit(
  jax.value_and_grad(
    lambda z1, z2, lam: redundancy.barlow_twins(z1, z2, lambda_offdiag=lam),
    (0, 1),
    has_aux=True,
  )
)


@pytest.mark.parametrize("lam", [5e-3, 0.5])
def test_matches_numpy(lam):
  z1 = RNG.normal(size=(8, 4)).astype(np.float32) * 3 + 1
  z2 = (z1 + RNG.normal(size=(8, 4))).astype(np.float32)
  (loss, aux), _ = _vg(z1, z2, lam)
  assert loss.dtype == jnp.float32
  np.testing.assert_allclose(loss, ref_barlow_twins(z1, z2, lam), rtol=1e-5)
  np.testing.assert_allclose(
    aux["on_diag"] + lam * aux["off_diag"], loss, rtol=1e-6
  )


def test_identical_decorrelated_views_give_near_zero():
  # Orthogonal columns with zero mean: C = I (up to eps) -> loss ~ 0.
  # QR of [1, x]: the other columns are orthonormal and orthogonal to 1.
  q, _ = np.linalg.qr(np.c_[np.ones(8), RNG.normal(size=(8, 4))])
  z = q[:, 1:].astype(np.float32)
  (loss, aux), _ = _vg(z, z, 5e-3)
  assert loss < 1e-3 and abs(aux["mean_diag"] - 1) < 1e-3
  (bad, _), _ = _vg(z, z[::-1], 5e-3)
  assert bad > 0.5


@pytest.mark.parametrize("case", ["identical", "zeros", "batch_of_2"])
def test_finite_value_and_grad(case):
  z = RNG.normal(size=(8, 4)).astype(np.float32)
  z1, z2 = {
    "identical": (np.tile(z[:1], (8, 1)),) * 2,
    "zeros": (np.zeros_like(z),) * 2,
    "batch_of_2": (z[:2], z[2:4]),
  }[case]
  (loss, aux), grads = _vg(z1, z2, 5e-3)
  chex.assert_tree_all_finite((loss, aux, grads))


def test_bfloat16_and_errors():
  z1, z2 = RNG.normal(size=(2, 8, 4))
  b1, b2 = jnp.asarray(z1, jnp.bfloat16), jnp.asarray(z2, jnp.bfloat16)
  (loss, _), grads = _vg(b1, b2, 5e-3)
  assert loss.dtype == jnp.float32 and grads[0].dtype == jnp.bfloat16
  (want, _), _ = _vg(b1.astype(jnp.float32), b2.astype(jnp.float32), 5e-3)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  with pytest.raises(ValueError, match=r"z1 and z2.*\(8, 4\).*\(8, 2\)"):
    redundancy.barlow_twins(b1, b2[:, :2])
  with pytest.raises(ValueError, match="lambda_offdiag must be >= 0"):
    redundancy.barlow_twins(b1, b2, lambda_offdiag=-1.0)
