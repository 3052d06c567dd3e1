"""Objectives: sharded glue over idlearn.losses vs NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn.training import objectives, sharding


def _np_batch_hard(emb, ids, margin):
  d = np.sqrt(((emb[:, None] - emb[None]) ** 2).sum(-1))
  same = ids[:, None] == ids[None]
  hinge = []
  for i in range(len(ids)):
    pos = same[i].copy()
    pos[i] = False
    hinge.append(max(d[i][pos].max() - d[i][~same[i]].min() + margin, 0))
  return np.mean(hinge)


def _np_smoothed_ce(logits, labels, eps):
  c = logits.shape[1]
  logp = logits - logits.max(1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
  target = np.full_like(logits, eps / c)
  target[np.arange(len(labels)), labels] += 1 - eps
  return -(target * logp).sum(1).mean()


def _inputs():
  rng = np.random.default_rng(0)
  ids = np.repeat(np.array([7, 3, 9, 1], np.int32), 4)  # P=4 x K=4
  labels = np.repeat(np.array([2, 1, 3, 0], np.int32), 4)
  emb = rng.normal(size=(16, 6)).astype(np.float32)
  logits = rng.normal(size=(16, 5)).astype(np.float32)
  return ids, labels, emb, logits


@pytest.mark.parametrize("devices", [1, 8])
def test_triplet_ce_matches_reference(devices):
  ids, labels, emb, logits = _inputs()
  mesh = sharding.make_data_mesh(jax.devices()[:devices])
  obj = objectives.make_objective(
    {
      "name": "triplet_ce",
      "margin": 0.3,
      "label_smoothing": 0.1,
      "ce_weight": 0.5,
    },
    mesh,
  )
  outs = [{"emb": jnp.asarray(emb), "logits": jnp.asarray(logits)}]
  batch = {"id": jnp.asarray(ids), "label": jnp.asarray(labels)}
  loss, aux = jax.jit(lambda o, b: obj(o, b))(outs, batch)
  tri = _np_batch_hard(emb.astype(np.float64), ids, 0.3)
  ce = _np_smoothed_ce(logits.astype(np.float64), labels, 0.1)
  np.testing.assert_allclose(aux["triplet"], tri, rtol=1e-5)
  np.testing.assert_allclose(aux["ce"], ce, rtol=1e-5)
  np.testing.assert_allclose(loss, tri + 0.5 * ce, rtol=1e-5)
  acc = (logits.argmax(1) == labels).mean()
  np.testing.assert_allclose(aux["id_acc"], acc)


def test_pair_objective_shards_over_mesh_like_the_loss():
  """info_nce on 8 devices == the unsharded loss on the whole batch."""
  from idlearn import losses

  rng = np.random.default_rng(1)
  z1, z2 = (
    jnp.asarray(rng.normal(size=(16, 8)), jnp.float32) for _ in range(2)
  )
  mesh = sharding.make_data_mesh()
  obj = objectives.make_objective(
    {"name": "info_nce", "temperature": 0.2}, mesh
  )
  got, _ = jax.jit(lambda a, b: obj([{"proj": a}, {"proj": b}], {}))(z1, z2)
  want, _ = jax.jit(lambda a, b: losses.info_nce(a, b, temperature=0.2))(z1, z2)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # ... and its gradient too (pmean'd loss inside shard_map).
  g_got = jax.grad(lambda a: obj([{"proj": a}, {"proj": z2}], {})[0])(z1)
  g_want = jax.grad(lambda a: losses.info_nce(a, z2, temperature=0.2)[0])(z1)
  np.testing.assert_allclose(g_got, g_want, rtol=1e-4, atol=1e-7)


def test_bad_objective_configs():
  mesh = sharding.make_data_mesh(jax.devices()[:1])
  with pytest.raises(ValueError, match="valid fields are.*temperature"):
    objectives.make_objective({"name": "info_nce", "tau": 0.1}, mesh)
  obj = objectives.make_objective({"name": "info_nce", "on": "feat"}, mesh)
  with pytest.raises(ValueError, match="outputs only"):
    obj([{"emb": jnp.ones((4, 2))}] * 2, {})
  with pytest.raises(ValueError, match="needs 2 views"):
    obj([{"feat": jnp.ones((4, 2))}], {})
