"""sie / vicreg against a float64 NumPy reference; 8 devices == 1 device."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from idlearn import losses, sharding

RNG = np.random.default_rng(7)
N, D_INV, D_EQ = 16, 5, 3  # 2 rows per device on 8 devices


def _std_hinge(z):
  """1/2 mean_j relu(1 - sqrt(unbiased var_j + 1e-4)) (one view's half)."""
  std = np.sqrt(np.var(z, axis=0, ddof=1) + 1e-4)
  return np.mean(np.maximum(0.0, 1.0 - std)) / 2


def _cov_term(z):
  """sum_{i != j} C_ij^2 / d with C = Zc^T Zc / (n - 1)."""
  zc = z - z.mean(0)
  c = zc.T @ zc / (len(z) - 1)
  return np.sum(c[~np.eye(len(c), dtype=bool)] ** 2) / len(c)


def ref_vicreg(x, y, sim=10.0, std=10.0, cov=1.0):
  x, y = (np.asarray(a, np.float64) for a in (x, y))
  terms = {
    "inv": np.mean((x - y) ** 2),
    "std": _std_hinge(x) + _std_hinge(y),
    "cov": _cov_term(x) + _cov_term(y),
  }
  loss = sim * terms["inv"] + std * terms["std"] + cov * terms["cov"]
  return loss, terms


def ref_sie(x_inv, y_inv, x_eq, y_eq, pred, beta=0.45):
  x_inv, y_inv, x_eq, y_eq, pred = (
    np.asarray(a, np.float64) for a in (x_inv, y_inv, x_eq, y_eq, pred)
  )
  x, y = np.c_[x_inv, x_eq], np.c_[y_inv, y_eq]
  terms = {
    "inv": np.mean((x_inv - y_inv) ** 2),
    "equi": np.mean((pred - y_eq) ** 2),
    "std": _std_hinge(x) + _std_hinge(y),
    "pred_std": _std_hinge(pred),
    "cov": _cov_term(x) + _cov_term(y),
  }
  loss = (
    10 * terms["inv"]
    + beta * 10 * terms["equi"]
    + 10 * (terms["std"] + terms["pred_std"])
    + terms["cov"]
  )
  return loss, terms


def _sie_inputs(scale=1.0):
  x_inv, y_inv = RNG.normal(size=(2, N, D_INV)) * scale
  x_eq, y_eq, pred = RNG.normal(size=(3, N, D_EQ)) * scale
  y_inv = x_inv + 0.3 * y_inv  # correlated views
  return [a.astype(np.float32) for a in (x_inv, y_inv, x_eq, y_eq, pred)]


_vg_sie = jax.jit(
  jax.value_and_grad(losses.sie, argnums=(0, 1, 2, 3, 4), has_aux=True)
)
_vg_vicreg = jax.jit(jax.value_and_grad(losses.vicreg, (0, 1), has_aux=True))


# scale 0.3: every variance below the hinge (std term active); 3: above
@pytest.mark.parametrize("scale", [0.3, 3.0])
def test_sie_matches_numpy(scale):
  args = _sie_inputs(scale)
  (loss, aux), grads = _vg_sie(*args)
  want, terms = ref_sie(*args)
  assert loss.dtype == jnp.float32
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  for k, v in terms.items():
    np.testing.assert_allclose(aux[k], v, rtol=1e-5, atol=1e-7, err_msg=k)
  chex.assert_tree_all_finite(grads)
  # the std terms are on iff the embeddings' spread is below 1
  assert (aux["std"] > 0.1) == (scale < 1)


def test_vicreg_matches_numpy_and_is_sie_without_the_equivariant_part():
  x, y = RNG.normal(size=(2, N, 6)).astype(np.float32)
  (loss, aux), _ = _vg_vicreg(x, y)
  want, terms = ref_vicreg(x, y)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  for k, v in terms.items():
    np.testing.assert_allclose(aux[k], v, rtol=1e-5, err_msg=k)
  # other weights reach their terms
  got, _ = losses.vicreg(x, y, sim_weight=1.0, std_weight=2.0, cov_weight=3.0)
  np.testing.assert_allclose(
    got, terms["inv"] + 2 * terms["std"] + 3 * terms["cov"], rtol=1e-5
  )


def test_equivariance_term_follows_the_prediction():
  x_inv, y_inv, x_eq, y_eq, pred = _sie_inputs()
  (perfect, aux_p), _ = _vg_sie(x_inv, y_inv, x_eq, y_eq, y_eq)
  (wrong, aux_w), _ = _vg_sie(x_inv, y_inv, x_eq, y_eq, y_eq[::-1])
  assert float(aux_p["equi"]) == 0 and float(aux_w["equi"]) > 0.5
  np.testing.assert_allclose(
    wrong - perfect, 0.45 * 10 * aux_w["equi"], rtol=1e-5
  )


@pytest.mark.parametrize("case", ["zeros", "identical_rows"])
def test_finite_value_and_grad_at_collapse(case):
  z = np.zeros((N, D_INV + D_EQ), np.float32)
  if case == "identical_rows":
    z = np.tile(RNG.normal(size=(1, D_INV + D_EQ)), (N, 1)).astype(np.float32)
  inv, eq = z[:, :D_INV], z[:, D_INV:]
  (loss, aux), grads = _vg_sie(inv, inv, eq, eq, eq)
  chex.assert_tree_all_finite((loss, aux, grads))
  # collapsed: every std hinge at 1 - sqrt(1e-4) = 0.99
  np.testing.assert_allclose(aux["std"], 0.99, rtol=1e-5)
  np.testing.assert_allclose(aux["pred_std"], 0.99 / 2, rtol=1e-5)


def test_errors_name_the_argument():
  x_inv, y_inv, x_eq, y_eq, pred = _sie_inputs()
  with pytest.raises(ValueError, match=r"x_eq and pred.*\(16, 3\).*\(16, 2\)"):
    losses.sie(x_inv, y_inv, x_eq, y_eq, pred[:, :2])
  with pytest.raises(ValueError, match="x_inv and x_eq must hold the same"):
    losses.sie(x_inv[:8], y_inv[:8], x_eq, y_eq, pred)
  with pytest.raises(ValueError, match="equi_weight must be >= 0"):
    losses.sie(x_inv, y_inv, x_eq, y_eq, pred, equi_weight=-1.0)
  with pytest.raises(ValueError, match=">= 2 rows, got 1"):
    losses.vicreg(x_inv[:1], y_inv[:1])


def _sharded_equals_single(fn, args):
  """Value, aux and gradients of fn on 8 devices == on the whole batch."""
  mesh = sharding.make_data_mesh()
  assert mesh.shape[sharding.DATA_AXIS] == 8
  argnums = tuple(range(len(args)))
  vg = lambda f: jax.jit(jax.value_and_grad(f, argnums, has_aux=True))
  (want, want_aux), want_grads = vg(fn)(*args)
  rows = NamedSharding(mesh, P(sharding.DATA_AXIS))
  placed = [jax.device_put(a, rows) for a in args]
  got_fn = sharding.shard_loss(fn, mesh)
  (got, got_aux), got_grads = vg(got_fn)(*placed)
  chex.assert_trees_all_close((got, got_aux), (want, want_aux), rtol=1e-5)
  chex.assert_trees_all_close(got_grads, want_grads, rtol=1e-5, atol=1e-7)
  assert max(float(np.abs(g).max()) for g in want_grads) > 1e-3


def test_sie_on_8_devices_equals_1_device():
  _sharded_equals_single(losses.sie, _sie_inputs(0.5))


def test_vicreg_on_8_devices_equals_1_device():
  x, y = RNG.normal(size=(2, N, 6)).astype(np.float32) * 0.5
  _sharded_equals_single(
    functools.partial(losses.vicreg, cov_weight=2.0), [x, y]
  )
