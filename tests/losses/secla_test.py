"""SECLA and SECLA-B's stage-2 terms against a float64 NumPy loop
reference of the official loss (with masked padding), 8 devices == 1, and
the weak-supervision property: free embeddings trained with it name the
faces of their groups."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from idlearn import sharding
from idlearn.losses.secla import secla, secla_bootstrap

RTOL = 1e-5


def _score(q, keys):
  """s(Q, K) = mean_q max_k <q, k> (float64 loops)."""
  return np.mean([max(float(a @ c) for c in keys) for a in q])


def _ce(scores, i, ok):
  cols = [k for k in range(len(scores)) if ok[k]]
  z = np.array([scores[k] for k in cols])
  lse = z.max() + np.log(np.exp(z - z.max()).sum())
  return lse - scores[i]


def _np_secla(f, fm, n, nm, alpha, directions):
  f, n = f.astype(np.float64), n.astype(np.float64)
  b = len(f)
  ok = fm.any(1) & nm.any(1)
  sets_f = [f[i][fm[i]] for i in range(b)]
  sets_n = [n[i][nm[i]] for i in range(b)]
  nf = np.zeros((b, b))
  fn = np.zeros((b, b))
  for i in range(b):
    for k in range(b):
      if ok[i] and ok[k]:
        nf[i, k] = _score(sets_n[i], sets_f[k])
        fn[i, k] = _score(sets_f[i], sets_n[k])
  rows = np.flatnonzero(ok)
  ce_nf = np.mean([_ce(nf[i], i, ok) for i in rows])
  ce_fn = np.mean([_ce(fn[i], i, ok) for i in rows])
  agree = np.mean([(nf[i, i] - fn[i, i]) ** 2 for i in rows])
  loss = alpha * agree
  loss += ce_nf if directions in ("both", "name_to_face") else 0.0
  loss += ce_fn if directions in ("both", "face_to_name") else 0.0
  return loss, agree


def _np_bootstrap(m, a, n, mask):
  m, a, n = (x.astype(np.float64) for x in (m, a, n))
  b = len(m)
  ok = mask.any(1)
  sm, sa, sn = ([x[i][mask[i]] for i in range(b)] for x in (m, a, n))
  mats = np.zeros((4, b, b))
  for i in range(b):
    for k in range(b):
      if ok[i] and ok[k]:
        mats[0, i, k] = _score(sn[i], sm[i] if k == i else sa[k])
        mats[1, i, k] = _score(sm[i] if k == i else sa[i], sn[k])
        mats[2, i, k] = _score(sm[i], sa[k])
        mats[3, i, k] = _score(sa[i], sm[k])
  rows = np.flatnonzero(ok)
  ce = [np.mean([_ce(s[i], i, ok) for i in rows]) for s in mats]
  return ce[0] + ce[1] + ce[2] + ce[3]


def _pairs(b=16, m=3, k=5, d=6, seed=0, empty=True):
  """Image-caption pairs of people drawn from 30; padding holds garbage
  the masks must hide; with `empty`, pair 1 has no face (it must take no
  part)."""
  rng = np.random.default_rng(seed)
  people = rng.normal(size=(30, d))
  faces = rng.normal(size=(b, m, d)) * 5
  names = rng.normal(size=(b, k, d)) * 5
  fm, nm = np.zeros((b, m), bool), np.zeros((b, k), bool)
  for i in range(b):
    r = rng.integers(1, m + 1)
    who = rng.choice(30, size=r + 2, replace=False)
    faces[i, :r] = people[who[:r]] + 0.3 * rng.normal(size=(r, d))
    s = min(k, r + rng.integers(0, 3))  # captions name extra people
    names[i, :s] = people[who[:s]] + 0.3 * rng.normal(size=(s, d))
    fm[i, :r], nm[i, :s] = True, True
  if empty:
    fm[1] = False
  f32 = lambda x: x.astype(np.float32)
  return f32(faces), fm, f32(names), nm


@pytest.mark.parametrize(
  "alpha,directions",
  [(0.15, "both"), (0.0, "face_to_name"), (0.5, "name_to_face")],
)
def test_secla_matches_float64_reference(alpha, directions):
  f, fm, n, nm = _pairs()
  want, want_agree = _np_secla(f, fm, n, nm, alpha, directions)
  fn = functools.partial(secla, alpha=alpha, directions=directions)
  got, aux = jax.jit(fn)(f, fm, n, nm)
  np.testing.assert_allclose(got, want, rtol=RTOL)
  np.testing.assert_allclose(aux["agreement"], want_agree, rtol=1e-4)
  assert 0.5 < float(aux["top1_face_to_name"]) <= 1.0


def test_bootstrap_matches_float64_reference():
  m, mask, n, _ = _pairs(k=3, seed=1)
  a = m + np.random.default_rng(2).normal(size=m.shape).astype(np.float32)
  got, aux = jax.jit(secla_bootstrap)(m, a, n, mask)
  np.testing.assert_allclose(got, _np_bootstrap(m, a, n, mask), rtol=RTOL)
  np.testing.assert_allclose(got, aux["combined"] + aux["face"], rtol=1e-6)


@pytest.mark.parametrize("which", ["secla", "bootstrap"])
def test_8_devices_equal_1_device(which):
  mesh = sharding.make_data_mesh()
  assert mesh.shape[sharding.DATA_AXIS] == 8
  if which == "secla":
    f, fm, n, nm = _pairs()  # 2 pairs a device; pair 1 empty
    fn, args, diff, mask = secla, (f, fm, n, nm), (0, 2), fm
  else:
    m, mask, n, _ = _pairs(k=3, seed=1)
    a = np.roll(m, 1, axis=1)
    fn, args, diff = secla_bootstrap, (m, a, n, mask), (0, 1, 2)
  vg = lambda f: jax.jit(jax.value_and_grad(f, diff, has_aux=True))
  (want, want_aux), want_g = vg(fn)(*args)
  (got, got_aux), got_g = vg(sharding.shard_loss(fn, mesh))(*args)
  chex.assert_trees_all_close((got, got_aux), (want, want_aux), rtol=RTOL)
  chex.assert_trees_all_close(got_g, want_g, rtol=RTOL, atol=1e-6)
  assert max(float(np.abs(g).max()) for g in want_g) > 1e-3
  # padding and the empty pair get no gradient
  np.testing.assert_array_equal(np.asarray(want_g[0])[~mask], 0.0)


def test_true_captions_score_lower_than_shuffled_ones():
  f, fm, n, nm = _pairs(d=16, seed=3, empty=False)
  good, _ = jax.jit(secla)(f, fm, n, nm)
  perm = np.roll(np.arange(len(f)), 1)
  bad, _ = jax.jit(secla)(f, fm, n[perm], nm[perm])
  assert float(good) < float(bad)


def test_zero_embeddings_are_finite_and_bad_inputs_name_the_field():
  z, mask = jnp.zeros((4, 2, 3)), jnp.ones((4, 2), bool)
  loss, g = jax.jit(jax.value_and_grad(lambda x: secla(x, mask, x, mask)[0]))(z)
  assert np.isfinite(float(loss)) and np.isfinite(np.asarray(g)).all()
  with pytest.raises(ValueError, match="name_mask"):
    secla(z, mask, z, jnp.ones((4, 3), bool))
  with pytest.raises(ValueError, match="share the batch b and the width d"):
    secla(z, mask, jnp.zeros((4, 2, 5)), mask)
  with pytest.raises(ValueError, match="directions='one'"):
    secla(z, mask, z, mask, directions="one")
  with pytest.raises(ValueError, match="one shape"):
    secla_bootstrap(z, z, jnp.zeros((4, 2, 5)), mask)


def test_free_embeddings_learn_to_name_faces():
  """Weak supervision is enough: 12 people, photos of 1-3 of them with a
  caption of their names plus a distractor; a linear map of noisy face
  features and a name table trained with SECLA alone name the faces of
  held-out photos (no face-name link is ever given)."""
  rng = np.random.default_rng(0)
  people, d, r, s = 12, 8, 3, 4
  proto = rng.normal(size=(people, d))

  def photos(g):
    faces = np.zeros((g, r, d), np.float32)
    who = np.zeros((g, r), np.int32)
    cap = np.zeros((g, s), np.int32)
    fm, nm = np.zeros((g, r), bool), np.zeros((g, s), bool)
    for i in range(g):
      k = rng.integers(1, r + 1)
      ids = rng.choice(people, size=k + 1, replace=False)
      who[i, :k] = ids[:k]
      faces[i, :k] = proto[ids[:k]] + 0.3 * rng.normal(size=(k, d))
      cap[i, : k + 1] = rng.permutation(ids)  # + one distractor
      fm[i, :k], nm[i, : k + 1] = True, True
    return faces, fm, cap, nm, who

  train, test = photos(64), photos(64)
  params = {
    "w": jnp.asarray(rng.normal(size=(d, 16)) / np.sqrt(d), jnp.float32),
    "table": jnp.asarray(rng.normal(size=(people, 16)) * 0.1, jnp.float32),
  }
  tx = optax.adam(0.05)

  def loss_fn(p, faces, fm, cap, nm):
    return secla(faces @ p["w"], fm, p["table"][cap], nm)[0]

  @jax.jit
  def step(p, o):
    g = jax.grad(loss_fn)(p, *train[:4])
    u, o = tx.update(g, o)
    return optax.apply_updates(p, u), o

  opt = tx.init(params)
  for _ in range(150):
    params, opt = step(params, opt)
  faces, fm, cap, nm, who = test
  sims = np.einsum("grd,gsd->grs", faces @ params["w"], params["table"][cap])
  pred = np.take_along_axis(
    cap, np.where(nm[:, None], sims, -np.inf).argmax(-1), axis=1
  )
  acc = np.mean(pred[fm] == who[fm])
  assert acc > 0.9, acc
