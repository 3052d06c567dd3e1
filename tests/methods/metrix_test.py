"""The metrix method: its loss (unmixed, input- and embedding-level mixing)
on given network outputs vs a float64 NumPy reference of the formulas,
the partners and mixed images `prepare` draws, and 8 devices vs 1."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fake_setup import fake_setup

from idlearn import methods, sharding

RTOL = 1e-5


class FakeNet:
  """Stands in for `methods.Network`: each view handed to the method is
  already the network's output dict."""

  def __call__(self, x):
    return x


def _mesh(n):
  return sharding.make_data_mesh(jax.devices()[:n])


def _method(cfg, mesh):
  setup = fake_setup(mesh=mesh, num_classes=lambda: 0)
  return methods.make_method({"name": "metrix", **cfg}, setup)


def _loss(method, views, batch):
  ctx = methods.Context(
    extras={}, mined=None, step=jnp.int32(0), rng=jax.random.key(0)
  )
  return method.loss(FakeNet(), views, batch, ctx)


def _put(tree, mesh):
  return jax.device_put(tree, sharding.batch_sharding(mesh))


# --- float64 NumPy references, written from the formulas ---


def _unit(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _np_pairs(emb, ids, keys, w_pos):
  """(anchor, key, positive weight) over every pair; w_pos None: clean."""
  a = _unit(emb)
  for i in range(len(a)):
    for j in range(len(keys)):
      if w_pos is None:
        if i == j:
          continue
        yield a[i], keys[j], float(ids[i] == ids[j])
      else:
        yield a[i], keys[j], w_pos[i, j]


def _np_contrastive(pairs, margin):
  """The Metrix code: sum w+ d / #(> 0) + sum w- [m - d]_+ / #(> 0)."""
  pos, neg = [], []
  for a, k, w in pairs:
    d = np.linalg.norm(a - k)
    pos.append(w * d)
    neg.append((1 - w) * max(margin - d, 0.0))
  pos, neg = np.array(pos), np.array(neg)
  return pos.sum() / max((pos > 0).sum(), 1) + neg.sum() / max(
    (neg > 0).sum(), 1
  )


def _np_multi_similarity(pairs, n_anchors, margin, alpha=2.0, beta=50.0):
  """Mean over anchors of 1/a log(1 + sum w+ e^{-a(s-m)}) + 1/b log(1 +
  sum w- e^{b(s-m)}); `pairs` in anchor order."""
  pairs = list(pairs)
  per = len(pairs) // n_anchors
  out = []
  for i in range(n_anchors):
    sp = sn = 0.0
    for a, k, w in pairs[i * per : (i + 1) * per]:
      s = a @ k / np.linalg.norm(k)
      sp += w * np.exp(-alpha * (s - margin))
      sn += (1 - w) * np.exp(beta * (s - margin))
    out.append(np.log1p(sp) / alpha + np.log1p(sn) / beta)
  return np.mean(out)


def _np_metrix(emb, ids, mixed, ids_b, lam, kind, w, margin):
  def loss(pairs):
    if kind == "contrastive":
      return _np_contrastive(pairs, margin)
    return _np_multi_similarity(pairs, len(emb), margin)

  clean = loss(_np_pairs(emb, ids, _unit(emb), None))
  if mixed is None:
    return clean
  w_pos = lam * (ids[:, None] == ids[None]) + (1 - lam) * (
    ids[:, None] == ids_b[None]
  )  # [anchor, mixed example]
  return clean + w * loss(_np_pairs(emb, ids, _unit(mixed), w_pos))


def _inputs(seed=0, b=16, d=6):
  rng = np.random.default_rng(seed)
  ids = np.repeat(rng.permutation(50)[:4], 4).astype(np.int32)  # P4 x K4
  emb = rng.normal(size=(b, d)) + 1.5 * np.eye(d)[ids % d]
  partner = np.array(
    [rng.choice(np.flatnonzero(ids != ids[i])) for i in range(b)]
  )
  mixed_in = rng.normal(size=(b, d))  # the network's output on mixed images
  return ids, emb, partner, mixed_in


@pytest.mark.parametrize(
  "mix, kind",
  [
    ("none", "contrastive"),
    ("none", "multi_similarity"),
    ("input", "contrastive"),
    ("input", "multi_similarity"),
    ("embedding", "contrastive"),
    ("embedding", "multi_similarity"),
  ],
)
def test_loss_matches_the_formula_on_1_and_8_devices(mix, kind):
  ids, emb, partner, mixed_in = _inputs()
  lam, margin, w = 0.35, 0.9, 0.4
  cfg = {"mix": mix, "loss": kind, "margin": margin, "mix_weight": w}
  views = {"image": [{"eval": jnp.asarray(emb, jnp.float32)}]}
  batch = {"id": ids}
  if mix != "none":
    batch.update(
      mix_partner=partner.astype(np.int32),
      mix_id_b=ids[partner],
      mix_lambda=np.full(16, lam, np.float32),
    )
  if mix == "input":
    views["mixed"] = [{"eval": jnp.asarray(mixed_in, jnp.float32)}]
  results = []
  for n in (1, 8):
    mesh = _mesh(n)
    method = _method(cfg, mesh)
    b, v = _put(batch, mesh), _put(views, mesh)

    def f(e, method=method, b=b, v=v):
      loss, aux, _ = _loss(method, {**v, "image": [{"eval": e}]}, b)
      return loss, aux

    vg = jax.jit(jax.value_and_grad(f, has_aux=True))
    results.append(vg(_put(views["image"][0]["eval"], mesh)))
  chex.assert_trees_all_close(results[0], results[1], rtol=1e-5, atol=1e-7)
  (loss, aux), grad = results[0]
  mixed = {
    "none": None,
    "input": mixed_in,
    "embedding": lam * _unit(emb) + (1 - lam) * _unit(emb)[partner],
  }[mix]
  want = _np_metrix(emb, ids, mixed, ids[partner], lam, kind, w, margin)
  np.testing.assert_allclose(loss, want, rtol=RTOL)
  assert ("mixed" in aux) == (mix != "none")
  assert np.isfinite(np.asarray(grad)).all() and np.abs(grad).max() > 0


@pytest.mark.parametrize("mix", ["input", "embedding"])
def test_prepare_mixes_with_other_identities_on_1_and_8_devices(mix):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(16, 4, 2, 3)).astype(np.float32)
  ids = np.repeat(np.arange(4) * 3, 4).astype(np.int32)
  outs = []
  for n in (1, 8):
    mesh = _mesh(n)
    prepare = jax.jit(_method({"mix": mix}, mesh).prepare)
    outs.append(
      prepare(
        jax.random.key(5), {"image": (_put(x, mesh),)}, _put({"id": ids}, mesh)
      )
    )
  chex.assert_trees_all_close(outs[0], outs[1], rtol=0, atol=0)
  views, got = outs[0]
  partner, lam = np.asarray(got["mix_partner"]), np.asarray(got["mix_lambda"])
  assert (ids[partner] != ids).all()  # a partner of another identity
  np.testing.assert_array_equal(got["mix_id_b"], ids[partner])
  assert np.all(lam == lam[0]) and 0 < lam[0] < 1  # one lam per batch
  if mix == "input":
    want = lam[0] * x + (1 - lam[0]) * x[partner]
    np.testing.assert_allclose(views["mixed"][0], want, rtol=1e-6, atol=1e-6)
  else:
    assert "mixed" not in views  # mixed after the network


def test_unmixed_prepare_is_the_identity_and_bad_configs_name_the_field():
  mesh = _mesh(1)
  views, batch = {"image": (jnp.zeros((4, 2, 2, 3)),)}, {"id": jnp.arange(4)}
  method = _method({"mix": "none"}, mesh)
  assert method.prepare(jax.random.key(0), views, batch) == (views, batch)
  with pytest.raises(ValueError, match="mix='feature'"):
    _method({"mix": "feature"}, mesh)
  with pytest.raises(ValueError, match="loss='triplet'"):
    _method({"loss": "triplet"}, mesh)
  with pytest.raises(ValueError, match="mix_alpha=0"):
    _method({"mix_alpha": 0.0}, mesh)
  with pytest.raises(ValueError, match="loss_on"):
    _method({"loss_on": "logits"}, mesh)
