"""MMT's losses against float64 NumPy written from the official code's
formulas, and 8 devices == 1 device (values, aux and gradients)."""

import chex
import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from idlearn import losses, sharding
from idlearn.losses import mutual

RNG = np.random.default_rng(16)
N, D, C = 16, 6, 5  # 2 rows per device on 8 devices
# P x K = 4 x 4 ids, shuffled so that positives sit on other devices.
IDS = RNG.permutation(np.repeat(np.arange(4), 4)).astype(np.int32)


def _dist(x):
  x = np.asarray(x, np.float64)
  return np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))


def _hardest(emb, ids):
  """(d, [(a, p, n)]) with the batch-hard p and n of every anchor."""
  d, out = _dist(emb), []
  for a in range(len(ids)):
    pos = [j for j in range(len(ids)) if j != a and ids[j] == ids[a]]
    neg = [j for j in range(len(ids)) if ids[j] != ids[a]]
    if pos and neg:
      out.append((a, max(pos, key=lambda j: d[a, j]),
                  min(neg, key=lambda j: d[a, j])))  # fmt: skip
  return d, out


def ref_soft_margin_triplet(emb, ids):
  d, trips = _hardest(emb, ids)
  return np.mean([np.log1p(np.exp(d[a, p] - d[a, n])) for a, p, n in trips])


def ref_soft_triplet(emb, ref, ids):
  d, trips = _hardest(emb, ids)
  dr = _dist(ref)
  terms = []
  for a, p, n in trips:
    s = np.array([d[a, p], d[a, n]])
    t = np.array([dr[a, p], dr[a, n]])
    logp = s - np.log(np.exp(s).sum())
    terms.append(-(np.exp(t) / np.exp(t).sum() * logp).sum())
  return np.mean(terms)


def ref_soft_cross_entropy(logits, teacher):
  logits, teacher = np.float64(logits), np.float64(teacher)
  logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  q = np.exp(teacher) / np.exp(teacher).sum(1, keepdims=True)
  return -(q * logp).sum(1).mean()


def _inputs():
  emb, ref = RNG.normal(size=(2, N, D)).astype(np.float32)
  logits, teacher = RNG.normal(size=(2, N, C)).astype(np.float32) * 2
  return emb, ref, logits, teacher


def test_soft_margin_triplet_matches_numpy_and_the_log_softmax_form():
  emb = _inputs()[0]
  loss, aux = jax.jit(mutual.soft_margin_triplet)(emb, IDS)
  np.testing.assert_allclose(loss, ref_soft_margin_triplet(emb, IDS), 1e-5)
  np.testing.assert_allclose(aux["frac_valid"], 1.0)
  # softplus(d_ap - d_an) = -log softmax([d_ap, d_an])[1] (official form)
  d, trips = _hardest(emb, IDS)
  official = np.mean([
    -(d[a, n] - np.logaddexp(d[a, p], d[a, n])) for a, p, n in trips
  ])  # fmt: skip
  np.testing.assert_allclose(loss, official, 1e-5)


def test_soft_triplet_matches_numpy_and_holds_the_reference_constant():
  emb, ref, _, _ = _inputs()
  f = jax.jit(jax.value_and_grad(mutual.soft_triplet, (0, 1), has_aux=True))
  (loss, aux), (g_emb, g_ref) = f(emb, ref, IDS)
  np.testing.assert_allclose(loss, ref_soft_triplet(emb, ref, IDS), 1e-5)
  assert np.abs(g_emb).max() > 1e-3 and not np.any(g_ref)
  assert 0 < aux["target_neg"] < 1
  # the reference's own hardest pairs are not used: a reference equal to
  # the student gives the entropy of the student's own distribution
  same, _ = mutual.soft_triplet(emb, emb, IDS)
  np.testing.assert_allclose(same, ref_soft_triplet(emb, emb, IDS), 1e-5)


def test_soft_cross_entropy_matches_numpy_and_is_minimal_at_the_teacher():
  _, _, logits, teacher = _inputs()
  f = jax.jit(jax.value_and_grad(mutual.soft_cross_entropy, (0, 1),
                                 has_aux=True))  # fmt: skip
  (loss, _), (g, g_teacher) = f(logits, teacher)
  np.testing.assert_allclose(loss, ref_soft_cross_entropy(logits, teacher),
                             1e-5)  # fmt: skip
  assert not np.any(g_teacher)
  # at logits == teacher the gradient softmax(l) - softmax(t) vanishes
  (_, aux), (g0, _) = f(teacher, teacher)
  np.testing.assert_allclose(g0, 0.0, atol=1e-7)
  assert aux["agreement"] == 1.0 and np.abs(g).max() > 1e-3


def test_exported_from_losses():
  assert losses.soft_triplet is mutual.soft_triplet
  assert losses.soft_margin_triplet is mutual.soft_margin_triplet
  assert losses.soft_cross_entropy is mutual.soft_cross_entropy


def test_anchors_without_a_positive_do_not_count():
  emb = _inputs()[0][:5]
  ids = np.array([0, 0, 1, 1, 2], np.int32)  # row 4: no positive
  loss, aux = mutual.soft_margin_triplet(emb, ids)
  np.testing.assert_allclose(loss, ref_soft_margin_triplet(emb, ids), 1e-5)
  np.testing.assert_allclose(aux["frac_valid"], 4 / 5)


CASES = {
  "soft_margin_triplet": (mutual.soft_margin_triplet, lambda x: (x[0], IDS)),
  "soft_triplet": (mutual.soft_triplet, lambda x: (x[0], x[1], IDS)),
  "soft_cross_entropy": (mutual.soft_cross_entropy, lambda x: (x[2], x[3])),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_8_devices_equal_1_device(name):
  fn, pick = CASES[name]
  args = pick(_inputs())
  mesh = sharding.make_data_mesh()
  assert mesh.shape[sharding.DATA_AXIS] == 8
  vg = lambda f: jax.jit(jax.value_and_grad(f, 0, has_aux=True))
  (want, want_aux), want_g = vg(fn)(*args)
  split = NamedSharding(mesh, P(sharding.DATA_AXIS))
  placed = [jax.device_put(a, split) for a in args]
  (got, got_aux), got_g = vg(sharding.shard_loss(fn, mesh))(*placed)
  chex.assert_trees_all_close((got, got_aux), (want, want_aux), rtol=1e-5)
  chex.assert_trees_all_close(got_g, want_g, rtol=1e-5, atol=1e-7)
  assert float(np.abs(want_g).max()) > 1e-3
