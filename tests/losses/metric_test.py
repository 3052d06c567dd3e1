"""triplet (batch_hard, semi_hard, batch_all) against float64 NumPy loops."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn.losses import metric

RNG = np.random.default_rng(1)
IDS = np.array([0, 0, 1, 1, 1, 2, 2, 3, 4, 4], np.int32)  # id 3: no positive


def ref_triplet(emb, ids, margin, mining, squared):
  """Straight from the definitions, one anchor / pair / triplet at a time."""
  emb = np.asarray(emb, np.float64)
  n = len(emb)
  d = np.sqrt(((emb[:, None] - emb[None]) ** 2).sum(-1))
  if squared:
    d = d**2
  hinges = []
  for a in range(n):
    pos = [p for p in range(n) if p != a and ids[p] == ids[a]]
    neg = [k for k in range(n) if ids[k] != ids[a]]
    if not pos or not neg:
      continue
    if mining == "batch_hard":
      hinges.append(max(max(d[a, pos]) - min(d[a, neg]) + margin, 0.0))
    for p in pos:
      if mining == "semi_hard":
        farther = [d[a, k] for k in neg if d[a, k] > d[a, p]]
        d_an = min(farther) if farther else max(d[a, neg])
        hinges.append(max(d[a, p] - d_an + margin, 0.0))
      if mining == "batch_all":
        hinges += [d[a, p] - d[a, k] + margin for k in neg]
  hinges = np.array(hinges)
  if mining == "batch_all":
    hinges = hinges[hinges > 0]
    return hinges.mean() if hinges.size else 0.0
  return hinges.mean()


@functools.cache
def _jit(mining, squared, margin=0.3, grad=False):
  f = functools.partial(
    metric.triplet, margin=margin, mining=mining, squared=squared
  )
  if grad:
    f = jax.value_and_grad(f, has_aux=True)
  return jax.jit(f)


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("mining", metric.MININGS)
def test_triplet_matches_numpy(mining, squared):
  emb = RNG.normal(size=(len(IDS), 4)).astype(np.float32) * 0.5
  margin = 1.0 if squared else 0.3
  loss, aux = _jit(mining, squared, margin)(emb, IDS)
  want = ref_triplet(emb, IDS, margin, mining, squared)
  assert want > 0 and loss.dtype == jnp.float32
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(aux["frac_valid"], 9 / 10)


def test_semi_hard_falls_back_to_farthest_negative():
  """1-D points: anchor 0 at 0, positive at 2, negatives at 0.5 and 1."""
  emb = np.array([[0.0], [2.0], [0.5], [1.0]], np.float32)
  ids = np.array([0, 0, 1, 2], np.int32)
  loss, _ = _jit("semi_hard", False, 0.1)(emb, ids)
  # Pairs (0,1): no negative beyond 2 -> farthest (1.0): 2 - 1 + 0.1 = 1.1.
  # Pair (1,0): negatives at distance 1.5 and 1.0, none beyond 2 -> the
  # farthest, 1.5: 2 - 1.5 + 0.1 = 0.6. Mean = 0.85.
  np.testing.assert_allclose(loss, 0.85, rtol=1e-6)


def test_perfect_clusters_have_zero_batch_hard_loss():
  centres = np.eye(5, 4, dtype=np.float32) * 10
  emb = centres[IDS] + RNG.normal(size=(len(IDS), 4)).astype(np.float32) * 0.01
  loss, aux = _jit("batch_hard", False)(emb, IDS)
  assert loss == 0.0 and aux["frac_active"] == 0.0
  shuffled, _ = _jit("batch_hard", False)(emb, np.roll(IDS, 1))
  assert shuffled > 1.0


@pytest.mark.parametrize("case", ["identical", "zeros", "batch_of_2"])
@pytest.mark.parametrize("mining", metric.MININGS)
def test_finite_value_and_grad(mining, case):
  emb = {
    "identical": np.ones((4, 3), np.float32),
    "zeros": np.zeros((4, 3), np.float32),
    "batch_of_2": RNG.normal(size=(2, 3)).astype(np.float32),
  }[case]
  ids = np.array([0, 1] if case == "batch_of_2" else [0, 0, 1, 1], np.int32)
  (loss, aux), grad = _jit(mining, False, grad=True)(emb, ids)
  chex.assert_tree_all_finite((loss, aux, grad))


def test_no_positive_pair_under_jit_gives_zero_and_flag():
  emb = RNG.normal(size=(4, 3)).astype(np.float32)
  ids = np.arange(4, dtype=np.int32)
  for mining in metric.MININGS:
    (loss, aux), grad = _jit(mining, False, grad=True)(emb, ids)
    assert loss == 0.0 and aux["frac_valid"] == 0.0
    np.testing.assert_array_equal(grad, 0.0)


def test_bfloat16_inputs():
  emb = RNG.normal(size=(len(IDS), 4)).astype(np.float32)
  bf = jnp.asarray(emb, jnp.bfloat16)
  (loss, _), grad = _jit("batch_hard", False, grad=True)(bf, IDS)
  assert loss.dtype == jnp.float32 and grad.dtype == jnp.bfloat16
  (want, _), _ = _jit("batch_hard", False, grad=True)(
    bf.astype(jnp.float32), IDS
  )
  np.testing.assert_allclose(loss, want, rtol=1e-6)


def test_bad_inputs_raise():
  emb = jnp.zeros((4, 3))
  with pytest.raises(ValueError, match=r"ids must be \[b\].*\(4, 3\).*\(3,\)"):
    metric.triplet(emb, jnp.zeros(3, jnp.int32))
  with pytest.raises(
    ValueError, match=r"ids of shape \(4,\) hold no positive pair"
  ):
    metric.triplet(emb, jnp.arange(4))
  with pytest.raises(ValueError, match="single identity"):
    metric.triplet(emb, jnp.zeros(4, jnp.int32))
  with pytest.raises(ValueError, match="mining must be one of"):
    metric.triplet(emb, jnp.array([0, 0, 1, 1]), mining="hardest")
  with pytest.raises(ValueError, match=r"emb must be \[b, d\]"):
    metric.triplet(emb[:, 0], jnp.array([0, 0, 1, 1]))
  with pytest.raises(ValueError, match="margin must be >= 0"):
    metric.triplet(emb, jnp.array([0, 0, 1, 1]), margin=-1.0)
