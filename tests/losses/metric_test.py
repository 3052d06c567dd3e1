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
def _vg(mining, squared=False):
  """One compiled value-and-grad per (mining, squared); margin is traced."""
  f = lambda emb, ids, m: metric.triplet(
    emb, ids, margin=m, mining=mining, squared=squared
  )
  return jax.jit(jax.value_and_grad(f, has_aux=True))


def _emb(scale=0.5):
  return RNG.normal(size=(len(IDS), 4)).astype(np.float32) * scale


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("mining", metric.MININGS)
def test_triplet_matches_numpy(mining, squared):
  emb = _emb()
  margin = 1.0 if squared else 0.3
  (loss, aux), _ = _vg(mining, squared)(emb, IDS, margin)
  want = ref_triplet(emb, IDS, margin, mining, squared)
  assert want > 0 and loss.dtype == jnp.float32
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(aux["frac_valid"], 9 / 10)


def test_semi_hard_falls_back_to_farthest_negative():
  """1-D points: anchor 0 at 0, positive at 2, negatives at 0.5 and 1."""
  emb = np.array([[0.0], [2.0], [0.5], [1.0]], np.float32)
  ids = np.array([0, 0, 1, 2], np.int32)
  (loss, _), _ = _vg("semi_hard")(emb, ids, 0.1)
  # Pairs (0,1): no negative beyond 2 -> farthest (1.0): 2 - 1 + 0.1 = 1.1.
  # Pair (1,0): negatives at distance 1.5 and 1.0, none beyond 2 -> the
  # farthest, 1.5: 2 - 1.5 + 0.1 = 0.6. Mean = 0.85.
  np.testing.assert_allclose(loss, 0.85, rtol=1e-6)


def test_perfect_clusters_have_zero_batch_hard_loss():
  centres = np.eye(5, 4, dtype=np.float32) * 10
  emb = centres[IDS] + _emb(0.01)
  (loss, aux), _ = _vg("batch_hard")(emb, IDS, 0.3)
  assert loss == 0.0 and aux["frac_active"] == 0.0
  (shuffled, _), _ = _vg("batch_hard")(emb, np.roll(IDS, 1), 0.3)
  assert shuffled > 1.0


@pytest.mark.parametrize("case", ["identical", "zeros", "batch_of_2"])
@pytest.mark.parametrize("mining", metric.MININGS)
def test_finite_value_and_grad(mining, case):
  emb, ids = {
    "identical": (np.ones((len(IDS), 4), np.float32), IDS),
    "zeros": (np.zeros((len(IDS), 4), np.float32), IDS),
    "batch_of_2": (_emb()[:2], np.array([0, 0], np.int32)),
  }[case]
  (loss, aux), grad = _vg(mining)(emb, ids, 0.3)
  chex.assert_tree_all_finite((loss, aux, grad))


def test_no_positive_pair_under_jit_gives_zero_and_flag():
  emb, ids = _emb(), np.arange(len(IDS), dtype=np.int32)
  for mining in metric.MININGS:
    (loss, aux), grad = _vg(mining)(emb, ids, 0.3)
    assert loss == 0.0 and aux["frac_valid"] == 0.0
    np.testing.assert_array_equal(grad, 0.0)


def test_bfloat16_inputs():
  bf = jnp.asarray(_emb(), jnp.bfloat16)
  (loss, _), grad = _vg("batch_hard")(bf, IDS, 0.3)
  assert loss.dtype == jnp.float32 and grad.dtype == jnp.bfloat16
  (want, _), _ = _vg("batch_hard")(bf.astype(jnp.float32), IDS, 0.3)
  np.testing.assert_allclose(loss, want, rtol=1e-6)


def test_bad_inputs_raise():
  emb = np.zeros((4, 3), np.float32)
  with pytest.raises(ValueError, match=r"ids must be \[b\].*\(4, 3\).*\(3,\)"):
    metric.triplet(emb, np.zeros(3, np.int32))
  with pytest.raises(
    ValueError, match=r"ids of shape \(4,\) hold no positive pair"
  ):
    metric.triplet(emb, np.arange(4))
  with pytest.raises(ValueError, match="single identity"):
    metric.triplet(emb, np.zeros(4, np.int32))
  with pytest.raises(ValueError, match="mining must be one of"):
    metric.triplet(emb, np.array([0, 0, 1, 1]), mining="hardest")
  with pytest.raises(ValueError, match=r"emb must be \[b, d\]"):
    metric.triplet(emb[:, 0], np.array([0, 0, 1, 1]))
  with pytest.raises(ValueError, match="margin must be >= 0"):
    metric.triplet(emb, np.array([0, 0, 1, 1]), margin=-1.0)
