"""CLUB mutual-information upper bound vs the formula and an analytic case."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn import sharding
from idlearn.losses import mutual_info

RTOL = 1e-5


def _np_q(params, x):
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)

  def mlp(b):
    return np.maximum(x @ b["w1"] + b["b1"], 0) @ b["w2"] + b["b2"]

  return mlp(p["mu"]), np.tanh(mlp(p["logvar"]))


def _np_club(params, x, y):
  """Double loop over (i, j): log q(y_i|x_i) - mean_j log q(y_j|x_i)."""
  mu, logvar = _np_q(params, x)
  var = np.exp(logvar)
  n = len(x)

  def logq(j, i):  # log N(y_j; mu_i, var_i) up to the shared constant
    return -np.sum((y[j] - mu[i]) ** 2 / (2 * var[i]) + 0.5 * logvar[i])

  return np.mean(
    [logq(i, i) - np.mean([logq(j, i) for j in range(n)]) for i in range(n)]
  )


def _np_nll(params, x, y):
  mu, logvar = _np_q(params, x)
  return np.mean(np.sum((y - mu) ** 2 / np.exp(logvar) + logvar, axis=1))


def _inputs(b=16, dx=5, dy=3, seed=0, variance=True):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(b, dx))
  y = x[:, :dy] * 0.8 + rng.normal(size=(b, dy)) * 0.5 + 1.5
  params = mutual_info.club_init(
    jax.random.key(seed), dx, dy, hidden=8, variance=variance
  )
  return params, x, y


def _np_club_mean(params, x, y):
  """The authors' CLUBMean.forward and learning_loss, in float64."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["mu"])
  mu = np.maximum(x @ p["w1"] + p["b1"], 0) @ p["w2"] + p["b2"]  # [n, dy]
  positive = -((mu - y) ** 2) / 2.0
  negative = -((y[None, :, :] - mu[:, None, :]) ** 2).mean(axis=1) / 2.0
  bound = (positive.sum(-1) - negative.sum(-1)).mean()
  return bound, ((mu - y) ** 2).sum(axis=1).mean()


def test_club_matches_double_loop_reference():
  params, x, y = _inputs()
  got, aux = jax.jit(mutual_info.club_upper_bound)(
    params, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  )
  np.testing.assert_allclose(got, _np_club(params, x, y), rtol=RTOL)
  np.testing.assert_allclose(aux["positive"] - aux["negative"], got, rtol=1e-4)


def test_log_likelihood_matches_formula():
  params, x, y = _inputs(seed=1)
  got, _ = jax.jit(mutual_info.club_log_likelihood)(
    params, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  )
  np.testing.assert_allclose(got, _np_nll(params, x, y), rtol=RTOL)


def test_club_mean_matches_the_authors_club_mean():
  params, x, y = _inputs(seed=2, variance=False)
  assert set(params) == {"mu"}
  # the same mu branch as the learned-variance estimator from the same key
  full, _, _ = _inputs(seed=2)
  chex.assert_trees_all_equal(params["mu"], full["mu"])
  x32, y32 = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  want_bound, want_nll = _np_club_mean(params, x, y)
  got, _ = jax.jit(mutual_info.club_upper_bound)(params, x32, y32)
  np.testing.assert_allclose(got, want_bound, rtol=RTOL)
  got, _ = jax.jit(mutual_info.club_log_likelihood)(params, x32, y32)
  np.testing.assert_allclose(got, want_nll, rtol=RTOL)


def test_club_with_exact_gaussian_q_gives_analytic_value():
  # y = rho x + sqrt(1 - rho^2) eps. With q = the true conditional, CLUB
  # equals rho^2 / (1 - rho^2) >= I = -log(1 - rho^2) / 2.
  rho, n = 0.6, 20000
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, 1))
  y = rho * x + np.sqrt(1 - rho**2) * rng.normal(size=(n, 1))
  logvar = np.log(1 - rho**2)
  params = {  # relu(x) - relu(-x) = x: the MLP represents mu = rho x exactly
    "mu": {
      "w1": jnp.array([[1.0, -1.0]]),
      "b1": jnp.zeros(2),
      "w2": jnp.array([[rho], [-rho]]),
      "b2": jnp.zeros(1),
    },
    "logvar": {
      "w1": jnp.zeros((1, 2)),
      "b1": jnp.zeros(2),
      "w2": jnp.zeros((2, 1)),
      "b2": jnp.array([np.arctanh(logvar)]),
    },
  }
  got, _ = mutual_info.club_upper_bound(
    params, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  )
  np.testing.assert_allclose(got, rho**2 / (1 - rho**2), atol=0.03)
  assert float(got) > -0.5 * np.log(1 - rho**2)
  # Independent codes: the bound is ~0.
  y_ind = rng.normal(size=(n, 1))
  got, _ = mutual_info.club_upper_bound(
    params, jnp.asarray(x), jnp.asarray(y_ind, jnp.float32)
  )
  assert abs(float(got)) < 0.03


def test_gradients_are_routed_encoders_vs_q():
  params, x, y = _inputs()
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  gp, gx, gy = jax.jit(
    jax.grad(
      lambda p, a, b: mutual_info.club_upper_bound(p, a, b)[0], (0, 1, 2)
    )
  )(params, x, y)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(gp)) == 0.0
  assert float(jnp.abs(gx).max()) > 0 and float(jnp.abs(gy).max()) > 0
  gp, gx, gy = jax.jit(
    jax.grad(
      lambda p, a, b: mutual_info.club_log_likelihood(p, a, b)[0], (0, 1, 2)
    )
  )(params, x, y)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(gp)) > 0
  assert float(jnp.abs(gx).max()) == 0 and float(jnp.abs(gy).max()) == 0


@pytest.mark.parametrize("variance", [True, False])
@pytest.mark.parametrize(
  "fn", [mutual_info.club_upper_bound, mutual_info.club_log_likelihood]
)
def test_sharded_equals_global(fn, variance):
  params, x, y = _inputs(variance=variance)
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  mesh = sharding.make_data_mesh()

  def sharded(p, a, b):
    return sharding.shard_loss(lambda a, b, **kw: fn(p, a, b, **kw), mesh)(a, b)

  argnums = (1, 2) if fn is mutual_info.club_upper_bound else 0
  vg = lambda f: jax.jit(jax.value_and_grad(f, argnums, has_aux=True))
  got, g_got = vg(sharded)(params, x, y)
  want, g_want = vg(fn)(params, x, y)
  # The bound is a small difference of O(1) terms: float32 summation order
  # alone moves it by ~4e-7, hence the absolute tolerance.
  chex.assert_trees_all_close(got, want, rtol=RTOL, atol=1e-6)
  chex.assert_trees_all_close(g_got, g_want, rtol=RTOL, atol=1e-7)


def test_finite_at_zero_codes_and_bad_shapes():
  params = mutual_info.club_init(jax.random.key(0), 4, 2)
  z4, z2 = jnp.zeros((8, 4)), jnp.zeros((8, 2))
  g = jax.jit(
    jax.grad(lambda a, b: mutual_info.club_upper_bound(params, a, b)[0])
  )(z4, z2)
  assert np.isfinite(np.asarray(g)).all()
  with pytest.raises(ValueError, match="y"):
    mutual_info.club_upper_bound(params, z4, jnp.zeros((8, 3)))
  with pytest.raises(ValueError, match="x and y"):
    mutual_info.club_log_likelihood(params, z4, jnp.zeros((7, 2)))
