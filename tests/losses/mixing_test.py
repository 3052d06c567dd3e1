"""Mixed Barlow Twins regulariser, Decoupled Mixup and Metrix vs formulas."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

from idlearn import sharding
from idlearn.losses import mixing

RTOL = 1e-5


def _sharded(loss_fn, args, argnums, **kw):
  """((value, aux), grads) of loss_fn on 8 fake devices via shard_loss."""
  f = sharding.shard_loss(loss_fn, sharding.make_data_mesh(), **kw)
  vg = jax.value_and_grad(f, argnums=argnums, has_aux=True)
  return jax.jit(vg)(*args)


def _single(loss_fn, args, argnums, **kw):
  f = lambda *a: loss_fn(*a, **kw)
  vg = jax.value_and_grad(f, argnums=argnums, has_aux=True)
  return jax.jit(vg)(*args)


# --- Mixed Barlow Twins ---


def _np_standardize(z):
  zc = z - z.mean(0)
  return zc / np.sqrt((zc**2).mean(0) + 1e-6)


def _np_mixed_bt(z1, z2, zm, perm, lam, lambda_offdiag, scale):
  n = z1.shape[0]
  z1n, z2n, zmn = map(_np_standardize, (z1, z2, zm))
  z2p = z2n[perm]
  total = 0.0
  for v in (z1n, z2n):
    target = lam * z1n.T @ v / n + (1 - lam) * z2p.T @ v / n
    total += np.sum((zmn.T @ v / n - target) ** 2)
  return scale * lambda_offdiag * total


def _bt_inputs(b=16, d=6, seed=0):
  rng = np.random.default_rng(seed)
  z1, z2, zm = (rng.normal(size=(b, d)) for _ in range(3))
  perm = rng.permutation(b)
  return z1, z2, zm, perm


def test_mixed_bt_matches_numpy_formula():
  z1, z2, zm, perm = _bt_inputs()
  want = _np_mixed_bt(z1, z2, zm, perm, 0.3, 5e-3, 5.0)
  args = [jnp.asarray(x, jnp.float32) for x in (z1, z2, zm)]
  got, aux = jax.jit(
    lambda a, b, c, p: mixing.mixed_barlow_twins_regularizer(
      a, b, c, p, mix_lambda=0.3
    )
  )(*args, jnp.asarray(perm))
  np.testing.assert_allclose(got, want, rtol=RTOL)
  np.testing.assert_allclose(
    5.0 * 5e-3 * (aux["reg_view1"] + aux["reg_view2"]), want, rtol=RTOL
  )


def test_mixed_bt_zero_when_mix_equals_first_view():
  z1, z2, _, perm = _bt_inputs()
  loss, _ = mixing.mixed_barlow_twins_regularizer(
    jnp.asarray(z1), jnp.asarray(z2), jnp.asarray(z1), perm, mix_lambda=1.0
  )
  assert abs(float(loss)) < 1e-8
  loss, _ = mixing.mixed_barlow_twins_regularizer(
    jnp.asarray(z1), jnp.asarray(z2), jnp.asarray(z2), perm, mix_lambda=0.5
  )
  assert float(loss) > 1e-3


def test_mixed_bt_sharded_equals_global():
  z1, z2, zm, perm = _bt_inputs()
  args = [jnp.asarray(x, jnp.float32) for x in (z1, z2, zm)] + [
    jnp.asarray(perm)
  ]
  kw = dict(mix_lambda=0.7)
  fn = mixing.mixed_barlow_twins_regularizer
  got, g_got = _sharded(fn, args, (0, 1, 2), **kw)
  want, g_want = _single(fn, args, (0, 1, 2), **kw)
  chex.assert_trees_all_close(got, want, rtol=RTOL, atol=1e-7)
  chex.assert_trees_all_close(g_got, g_want, rtol=RTOL, atol=1e-7)


def test_mixed_bt_finite_at_constant_features():
  z = jnp.zeros((8, 4))
  g = jax.jit(
    jax.grad(
      lambda a: mixing.mixed_barlow_twins_regularizer(
        a, a, a, jnp.arange(8), mix_lambda=0.5
      )[0]
    )
  )(z)
  assert np.isfinite(np.asarray(g)).all()


def test_mixed_bt_bad_shapes():
  z = jnp.zeros((8, 4))
  with pytest.raises(ValueError, match="z_mix"):
    mixing.mixed_barlow_twins_regularizer(
      z, z, jnp.zeros((8, 3)), jnp.arange(8), mix_lambda=0.5
    )
  with pytest.raises(ValueError, match="perm"):
    mixing.mixed_barlow_twins_regularizer(
      z, z, z, jnp.arange(7), mix_lambda=0.5
    )


# --- Decoupled Mixup ---


def _np_log_softmax(z):
  z = z - z.max()
  return z - np.log(np.exp(z).sum())


def _np_dm(logits, a, b, lam, eta, mode="both", power=1.0):
  """openmixup soft_mix_cross_entropy + ClsMixupHead eta weights, per row
  (lam_scale_mode="pow", lam_thr=1, lam_idx=power, thr 0.5)."""
  out = []
  for z, ya, yb, la in zip(logits, a, b, lam, strict=True):
    lp = _np_log_softmax(z)
    loss = -(la * lp[ya] + (1 - la) * lp[yb])
    if ya != yb and 1e-3 < la < 1 - 1e-3 and la != 0.5:
      w = {"both": [la, 1 - la],
           "less": [la, 0] if la < 0.5 else [0, 1 - la],
           "more": [la, 0] if la >= 0.5 else [0, 1 - la]}[mode]  # fmt: skip
      eta_a, eta_b = (eta * wi**power if wi > 0 else 0.0 for wi in w)
      keep_a = np.delete(np.arange(len(z)), yb)  # softmax without class b
      keep_b = np.delete(np.arange(len(z)), ya)
      pa = _np_log_softmax(z[keep_a])[list(keep_a).index(ya)]
      pb = _np_log_softmax(z[keep_b])[list(keep_b).index(yb)]
      loss += -(eta_a * pa + eta_b * pb)
    out.append(loss)
  return np.mean(out)


def _dm_inputs(b=16, c=7, seed=1):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(b, c)) * 3
  ya = rng.integers(0, c, b)
  yb = rng.integers(0, c, b)
  yb[:3] = ya[:3]  # some unmixed rows
  lam = rng.uniform(size=b)
  return logits, ya, yb, lam


@pytest.mark.parametrize(
  "mode, power", [("both", 1.0), ("both", 0.0), ("less", 0.5), ("more", 1.0)]
)
def test_decoupled_mixup_matches_numpy_formula(mode, power):
  logits, ya, yb, lam = _dm_inputs()
  lam[3], lam[4] = 0.5, 1.0  # openmixup: no decoupled term for these
  want = _np_dm(logits, ya, yb, lam, 0.1, mode, power)
  got, aux = jax.jit(
    lambda *a: mixing.decoupled_mixup(*a, eta_mode=mode, lam_power=power)
  )(jnp.asarray(logits, jnp.float32), ya, yb, jnp.asarray(lam, jnp.float32))
  np.testing.assert_allclose(got, want, rtol=RTOL)
  np.testing.assert_allclose(
    aux["mixup_ce"] + 0.1 * aux["decoupled"], want, rtol=RTOL
  )
  plain = mixing.decoupled_mixup(
    jnp.asarray(logits), ya, yb, jnp.asarray(lam), eta=0.0
  )[0]
  np.testing.assert_allclose(plain, aux["mixup_ce"], rtol=RTOL)


def test_decoupled_mixup_reduces_to_ce_when_unmixed():
  logits, ya, _, _ = _dm_inputs()
  got, _ = mixing.decoupled_mixup(
    jnp.asarray(logits), ya, ya, jnp.full((16,), 0.3), eta=5.0
  )
  pairs = zip(logits, ya, strict=True)
  want = -np.mean([_np_log_softmax(z)[y] for z, y in pairs])
  np.testing.assert_allclose(got, want, rtol=RTOL)


def test_decoupled_mixup_sharded_equals_global():
  logits, ya, yb, lam = _dm_inputs()
  args = [
    jnp.asarray(logits, jnp.float32),
    jnp.asarray(ya),
    jnp.asarray(yb),
    jnp.asarray(lam, jnp.float32),
  ]
  got, g_got = _sharded(mixing.decoupled_mixup, args, 0, eta=0.3)
  want, g_want = _single(mixing.decoupled_mixup, args, 0, eta=0.3)
  chex.assert_trees_all_close(got, want, rtol=RTOL)
  chex.assert_trees_all_close(g_got, g_want, rtol=RTOL, atol=1e-8)


def test_decoupled_mixup_finite_and_bad_shapes():
  g = jax.jit(
    jax.grad(
      lambda z: mixing.decoupled_mixup(
        z, jnp.zeros(4, int), jnp.ones(4, int), jnp.full((4,), 0.5)
      )[0]
    )
  )(jnp.zeros((4, 3)))
  assert np.isfinite(np.asarray(g)).all()
  with pytest.raises(ValueError, match="ids_b"):
    mixing.decoupled_mixup(
      jnp.zeros((4, 3)), jnp.zeros(4, int), jnp.zeros(3, int), jnp.ones(4)
    )
  with pytest.raises(ValueError, match="eta_mode"):
    mixing.decoupled_mixup(
      jnp.zeros((4, 3)), jnp.zeros(4, int), jnp.zeros(4, int), jnp.ones(4),
      eta_mode="all",
    )  # fmt: skip


# --- Metrix ---


def _np_norm(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _np_ms(s, wp, wn, m=0.5, a=2.0, b=50.0):
  """Multi-similarity of one anchor: s, wp, wn [k]."""
  pos = np.log1p(np.sum(wp * np.exp(-a * (s - m)))) / a
  neg = np.log1p(np.sum(wn * np.exp(b * (s - m)))) / b
  return pos + neg


def _np_avg_nonzero(terms):
  terms = np.concatenate(terms)
  return terms.sum() / max(np.sum(terms > 0), 1)


def _np_metrix(emb, ids, memb, ia, ib, lam, kind, w, m=0.5):
  """Per-anchor MS means, or the pair-wise contrastive of the Metrix code
  (Euclidean distances, non-zero averages over all pairs)."""
  q, mk = _np_norm(emb), _np_norm(memb)
  terms = {"clean": ([], [], []), "mixed": ([], [], [])}
  for i in range(len(q)):
    others = np.arange(len(q)) != i
    same = (ids[others] == ids[i]).astype(float)
    wp = lam * (ia == ids[i]) + (1 - lam) * (ib == ids[i])
    for key, k, pos in (("clean", q[others], same), ("mixed", mk, wp)):
      ms, tp, tn = terms[key]
      ms.append(_np_ms(k @ q[i], pos, 1 - pos, m))
      d = np.linalg.norm(k - q[i], axis=1)
      tp.append(pos * d)
      tn.append((1 - pos) * np.maximum(m - d, 0))
  if kind == "multi_similarity":
    value = {key: np.mean(t[0]) for key, t in terms.items()}
  else:
    value = {
      key: _np_avg_nonzero(t[1]) + _np_avg_nonzero(t[2])
      for key, t in terms.items()
    }
  return value["clean"] + w * value["mixed"], value


def _metrix_inputs(b=16, d=8, seed=2):
  rng = np.random.default_rng(seed)
  ids = np.repeat(np.arange(b // 4), 4)
  emb = rng.normal(size=(b, d)) + 2 * np.eye(d)[ids % d]
  ia = ids.copy()
  ib = (ids + 1) % (b // 4)  # positive-negative pairs
  lam = rng.uniform(size=b)
  memb = lam[:, None] * emb + (1 - lam[:, None]) * emb[rng.permutation(b)]
  return emb, ids, memb, ia, ib, lam


@pytest.mark.parametrize("kind", ["multi_similarity", "contrastive"])
def test_metrix_matches_numpy_formula(kind):
  emb, ids, memb, ia, ib, lam = _metrix_inputs()
  want, terms = _np_metrix(emb, ids, memb, ia, ib, lam, kind, 0.5, m=0.8)
  args = [jnp.asarray(emb, jnp.float32), ids, jnp.asarray(memb, jnp.float32)]
  got, aux = jax.jit(
    lambda *a: mixing.metrix(*a, loss=kind, mix_weight=0.5, margin=0.8),
  )(*args, ia, ib, jnp.asarray(lam, jnp.float32))
  np.testing.assert_allclose(got, want, rtol=RTOL)
  np.testing.assert_allclose(aux["mixed"], terms["mixed"], rtol=RTOL)
  clean, aux = mixing.metrix(args[0], ids, loss=kind, margin=0.8)  # unmixed
  np.testing.assert_allclose(clean, terms["clean"], rtol=RTOL)
  assert set(aux) == {"clean"}


@pytest.mark.parametrize("kind", ["multi_similarity", "contrastive"])
def test_metrix_clean_term_matches_pytorch_metric_learning(kind):
  emb, ids, memb, ia, ib, lam = _metrix_inputs()
  peer = {
    "multi_similarity": pml_losses.MultiSimilarityLoss(
      alpha=2.0, beta=50.0, base=0.5
    ),
    # the Metrix code's clean loss (LpDistance on unit embeddings)
    "contrastive": pml_losses.ContrastiveLoss(pos_margin=0, neg_margin=0.5),
  }[kind]
  want = peer(torch.tensor(emb), torch.tensor(ids)).item()
  _, aux = mixing.metrix(
    jnp.asarray(emb, jnp.float32), ids, jnp.asarray(memb), ia, ib, lam,
    loss=kind,
  )  # fmt: skip
  np.testing.assert_allclose(aux["clean"], want, rtol=RTOL)


@pytest.mark.parametrize("kind", ["multi_similarity", "contrastive"])
def test_metrix_sharded_equals_global(kind):
  emb, ids, memb, ia, ib, lam = _metrix_inputs()
  args = [
    jnp.asarray(emb, jnp.float32),
    jnp.asarray(ids),
    jnp.asarray(memb, jnp.float32),
    jnp.asarray(ia),
    jnp.asarray(ib),
    jnp.asarray(lam, jnp.float32),
  ]
  got, g_got = _sharded(mixing.metrix, args, (0, 2), loss=kind)
  want, g_want = _single(mixing.metrix, args, (0, 2), loss=kind)
  chex.assert_trees_all_close(got, want, rtol=RTOL)
  chex.assert_trees_all_close(g_got, g_want, rtol=RTOL, atol=1e-7)


@pytest.mark.parametrize("kind", ["multi_similarity", "contrastive"])
def test_metrix_finite_at_zero_and_bad_input(kind):
  z = jnp.zeros((4, 3))
  ids = jnp.array([0, 0, 1, 1])
  half = jnp.full((4,), 0.5)
  grad = jax.jit(
    jax.grad(
      lambda e: mixing.metrix(e, ids, e, ids, ids[::-1], half, loss=kind)[0]
    )
  )
  for x in (z, jnp.ones((4, 3))):  # zero vectors; equal ones (distance 0)
    assert np.isfinite(np.asarray(grad(x))).all()
  with pytest.raises(ValueError, match="loss"):
    mixing.metrix(z, ids, z, ids, ids, jnp.ones(4), loss="triplet")
  with pytest.raises(ValueError, match="mixed_emb"):
    mixing.metrix(z, ids, jnp.zeros((4, 2)), ids, ids, jnp.ones(4))


def test_sample_mix_partners():
  sample = jax.jit(mixing.sample_mix_partners)
  ids = jnp.repeat(jnp.arange(100), 4)
  partner, lam = sample(jax.random.key(0), ids)
  assert (np.asarray(ids[partner]) != np.asarray(ids)).all()
  assert ((lam >= 0) & (lam <= 1)).all()
  assert abs(float(lam.mean()) - 0.5) < 0.05  # Beta(1, 1) has mean 1/2
  again, _ = sample(jax.random.key(0), ids)
  np.testing.assert_array_equal(partner, again)
  single, _ = sample(jax.random.key(2), jnp.zeros(400, int))
  assert (np.asarray(single) != np.arange(400)).all()  # one id: any other row
  again, lam = mixing.sample_mix_partners(
    jax.random.key(0), ids, alpha=2.0, per_batch=True
  )
  np.testing.assert_array_equal(again, partner)  # the same partners
  assert lam.shape == (400,) and np.all(lam == lam[0]) and 0 < lam[0] < 1
