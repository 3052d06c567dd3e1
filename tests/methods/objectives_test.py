"""Each method's objective (its `loss` on given network outputs) vs float64
NumPy references written from the papers' formulas, and 8 devices vs 1."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fake_setup import fake_setup

from idlearn import methods, sharding
from idlearn.methods.barlow_twins import mix_views

RTOL = 1e-5


class FakeNet:
  """Stands in for `methods.Network`: each "view" handed to the method is
  already the network's output dict ("teacher": the EMA teacher's)."""

  def __call__(self, x):
    return {k: v for k, v in x.items() if k != "teacher"}

  def views(self, xs):
    return [self(x) for x in xs]

  def teacher(self, x):
    return x["teacher"]


class FakeMiner:
  """A stand-in miner for methods that need one (only its NAME is read)."""

  def __init__(self, name, max_clusters=6):
    self.NAME, self._max = name, max_clusters

  def max_clusters(self):
    return self._max


def _mesh(n):
  return sharding.make_data_mesh(jax.devices()[:n])


def _method(name, cfg, mesh, views, miner=None, **input_fields):
  setup = fake_setup(
    mesh=mesh,
    input={"name": "fake", "sampler": "pk", "k": 4, **input_fields},
    views={role: len(v) for role, v in views.items()},
  )
  return methods.make_method({"name": name, **cfg}, setup, miner)


def _call(method, views, batch, *, extras=None, mined=None, step=0):
  ctx = methods.Context(
    extras={} if extras is None else extras,
    mined=mined,
    step=jnp.int32(step),
    rng=jax.random.key(0),
  )
  return method.loss(FakeNet(), views, batch, ctx)


def _np_unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _np_log_softmax(x, axis=-1):
  x = x - x.max(axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis, keepdims=True))


def _put(tree, mesh):
  return jax.device_put(tree, sharding.batch_sharding(mesh))


def _value_and_grad(method, views, batch, at, **kw):
  """((loss, aux), d loss / d views[role][i][key]) under jit; at = (role,
  i, key)."""
  role, i, key = at

  def f(x):
    v = {r: [dict(o) for o in vs] for r, vs in views.items()}
    v[role][i][key] = x
    loss, aux, _ = _call(method, v, batch, **kw)
    return loss, aux

  return jax.jit(jax.value_and_grad(f, has_aux=True))(views[role][i][key])


def _same_on_1_and_8(name, cfg, views, batch, at, miner=None, **kw):
  results = []
  for n in (1, 8):
    mesh = _mesh(n)
    method = _method(name, cfg, mesh, views, miner)
    results.append(
      _value_and_grad(method, _put(views, mesh), _put(batch, mesh), at, **kw)
    )
  chex.assert_trees_all_close(results[0], results[1], rtol=1e-5, atol=1e-7)
  return results[0]


def _f32(**arrays):
  return {k: jnp.asarray(v, jnp.float32) for k, v in arrays.items()}


# --- supervised: batch-hard triplet + label-smoothed identity CE ---


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
  target = np.full_like(logits, eps / c)
  target[np.arange(len(labels)), labels] += 1 - eps
  return -(target * _np_log_softmax(logits)).sum(1).mean()


def test_supervised_triplet_ce_matches_reference_and_shards():
  rng = np.random.default_rng(0)
  ids = np.repeat(np.array([7, 3, 9, 1], np.int32), 4)  # P=4 x K=4
  labels = np.repeat(np.array([2, 1, 3, 0], np.int32), 4)
  emb, logits = rng.normal(size=(16, 6)), rng.normal(size=(16, 5))
  views = {"image": [_f32(emb=emb, logits=logits, eval=emb)]}
  batch = {"id": ids, "label": labels}
  cfg = {"label_smoothing": 0.1, "ce_weight": 0.5}
  (loss, aux), grad = _same_on_1_and_8(
    "supervised", cfg, views, batch, ("image", 0, "emb")
  )
  tri = _np_batch_hard(emb, ids, 0.3)
  ce = _np_smoothed_ce(logits, labels, 0.1)
  np.testing.assert_allclose(aux["triplet"], tri, rtol=RTOL)
  np.testing.assert_allclose(aux["ce"], ce, rtol=RTOL)
  np.testing.assert_allclose(loss, tri + 0.5 * ce, rtol=RTOL)
  np.testing.assert_allclose(aux["id_acc"], (logits.argmax(1) == labels).mean())
  assert np.abs(grad).max() > 0


# --- FaceNet: semi-hard triplet on L2-normalised embeddings ---


def _np_semi_hard(emb, ids, margin):
  emb = _np_unit(emb)
  d = ((emb[:, None] - emb[None]) ** 2).sum(-1)  # squared (FaceNet)
  hinges = []
  for a, p in itertools.permutations(range(len(ids)), 2):
    if ids[a] != ids[p]:
      continue
    neg = d[a][ids != ids[a]]
    harder = neg[neg > d[a, p]]
    dn = harder.min() if len(harder) else neg.max()
    hinges.append(max(d[a, p] - dn + margin, 0.0))
  return np.mean(hinges)


def test_facenet_triplet_normalises_and_uses_squared_distances():
  rng = np.random.default_rng(0)
  emb = rng.normal(size=(16, 8))
  ids = np.repeat(np.arange(4), 4).astype(np.int32)
  views = {"image": [_f32(eval=emb, emb=emb)]}
  (loss, aux), _ = _same_on_1_and_8(
    "facenet", {}, views, {"id": ids}, ("image", 0, "eval")
  )
  np.testing.assert_allclose(loss, _np_semi_hard(emb, ids, 0.2), rtol=RTOL)
  assert np.isfinite(aux["frac_active"]) and "ce" not in aux


# --- ArcFace / CosFace on the network's class weights ---


def _np_margin(emb, w, labels, scale, target):
  cos = _np_unit(emb) @ _np_unit(w).T
  logits = scale * cos
  rows = np.arange(len(labels))
  logits[rows, labels] = scale * target(cos[rows, labels])
  return -_np_log_softmax(logits)[rows, labels].mean()


@pytest.mark.parametrize("name", ["arcface", "cosface"])
def test_margin_methods_match_formula_and_shard(name):
  rng = np.random.default_rng(1)
  emb, w = rng.normal(size=(16, 8)), rng.normal(size=(5, 8))
  labels = rng.integers(0, 5, size=16).astype(np.int32)
  m = {"arcface": 0.5, "cosface": 0.35}[name]  # the methods' defaults
  target = {
    "arcface": lambda c: np.cos(np.arccos(c) + m),
    "cosface": lambda c: c - m,
  }[name]
  batch = {"id": labels + 100, "label": labels}
  # class weights are replicated, not split: compare both gradients
  results = []
  for n in (1, 8):
    mesh = _mesh(n)
    method = _method(name, {"num_classes": 5}, mesh, {"image": [None]})
    b = _put(batch, mesh)

    def f(e, cw, method=method, b=b):
      loss, aux, _ = _call(
        method, {"image": [{"proj": e, "class_weights": cw}]}, b
      )
      return loss, aux

    results.append(
      jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(
        _put(jnp.asarray(emb, jnp.float32), mesh), jnp.asarray(w, jnp.float32)
      )
    )
  chex.assert_trees_all_close(results[0], results[1], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(
    results[0][0][0], _np_margin(emb, w, labels, 30.0, target), rtol=RTOL
  )


# --- SimCLR family: the method's loss is the sharded library loss ---


@pytest.mark.parametrize("name, loss", [("simclr", "info_nce"), ("dcl", "dcl")])
def test_pair_methods_equal_the_unsharded_loss_on_8_devices(name, loss):
  from idlearn import losses

  rng = np.random.default_rng(1)
  z1, z2 = rng.normal(size=(16, 8)), rng.normal(size=(16, 8))
  views = {"global": [_f32(proj=z1), _f32(proj=z2)]}
  (got, _), grad = _same_on_1_and_8(
    name, {"temperature": 0.2}, views, {}, ("global", 0, "proj")
  )
  fn = getattr(losses, loss)
  want, g_want = jax.value_and_grad(
    lambda a: fn(a, jnp.asarray(z2, jnp.float32), temperature=0.2)[0]
  )(jnp.asarray(z1, jnp.float32))
  np.testing.assert_allclose(got, want, rtol=RTOL)
  np.testing.assert_allclose(grad, g_want, rtol=1e-4, atol=1e-7)


def test_bad_method_configs_name_the_field():
  mesh = _mesh(1)
  two = {"global": [None, None]}
  with pytest.raises(ValueError, match="valid fields are.*temperature"):
    _method("simclr", {"tau": 0.1}, mesh, two)
  with pytest.raises(ValueError, match="needs views"):
    _method("simclr", {}, mesh, {"global": [None]})
  with pytest.raises(ValueError, match="num_cameras >= 2"):
    _method("simclr", {"camera_adversary": 1.0}, mesh, two)
  with pytest.raises(ValueError, match="needs config.miner"):
    _method("domainmix", {}, mesh, {"image": [None]})
  with pytest.raises(ValueError, match="does not work with config.miner"):
    _method("simclr", {}, mesh, two, FakeMiner("target_clusters"))
  with pytest.raises(ValueError, match="matching='given'"):
    _method("isr", {"matching": "given"}, mesh, {"anchor": [0], "partner": [0]})
  with pytest.raises(ValueError, match="2 anchor views"):
    _method(
      "isr", {"instance_weight": 1.0}, mesh, {"anchor": [0], "partner": [0]}
    )
  with pytest.raises(ValueError, match="ema_decay"):
    _method("dino", {"ema_decay": 0.0}, mesh, two)


# --- ISR: bipartite matching + reliability-weighted contrastive loss ---


def _np_isr(za, zb, t, sigma):
  """Brute-force max-weight matching over all permutations, then the
  reliability-weighted symmetric InfoNCE of the matched pairs."""
  sim = _np_unit(za) @ _np_unit(zb).T
  perms = np.asarray(list(itertools.permutations(range(len(za)))))
  best = perms[np.argmax(sim[np.arange(len(za)), perms].sum(1))]
  a, b = _np_unit(za), _np_unit(zb[best])
  s = (a * b).sum(1)
  w = len(a) * np.exp(s / sigma) / np.exp(s / sigma).sum()
  nll = lambda q, k: -np.diag(_np_log_softmax(q @ k.T / t))
  return np.mean(w * 0.5 * (nll(a, b) + nll(b, a))), best


@pytest.mark.parametrize("matching", ["hungarian", "sinkhorn"])
def test_isr_matches_brute_force_matching_and_shards(matching):
  rng = np.random.default_rng(2)
  za = rng.normal(size=(8, 6))
  zb = za + 0.3 * rng.normal(size=(8, 6))  # row i of B: A's row i, moved
  track = np.arange(8, dtype=np.int32)
  cfg = dict(temperature=0.1, sigma=0.5, matching=matching)
  views = {"anchor": [_f32(proj=za)], "partner": [_f32(proj=zb)]}
  batch = {"tracklet": track, "id": track}
  (loss, aux), grad = _same_on_1_and_8(
    "isr", cfg, views, batch, ("anchor", 0, "proj")
  )
  want, best = _np_isr(za, zb, 0.1, 0.5)
  np.testing.assert_array_equal(best, np.arange(8))  # the true partners
  np.testing.assert_allclose(loss, want, rtol=1e-4)
  assert float(aux["match_acc"]) == 1.0 and float(aux["frac_matched"]) == 1.0
  assert np.isfinite(np.asarray(grad)).all() and np.abs(grad).max() > 0
  # The pairing of the rows is not used: shuffling frame B's rows (and
  # their tracklets) changes nothing.
  shuffle = rng.permutation(8)
  method = _method("isr", cfg, _mesh(1), views)
  shuffled = {**views, "partner": [_f32(proj=zb[shuffle])]}
  got, _, _ = jax.jit(lambda v: _call(method, v, {}))(shuffled)
  np.testing.assert_allclose(got, loss, rtol=1e-5)


def test_isr_min_similarity_drops_unreliable_matches():
  rng = np.random.default_rng(3)
  za = rng.normal(size=(8, 6))
  zb = za.copy()
  zb[:2] = -za[:2]  # two instances have no good partner
  views = {"anchor": [_f32(proj=za)], "partner": [_f32(proj=zb)]}
  method = _method("isr", {"min_similarity": 0.5}, _mesh(1), views)
  _, aux, _ = _call(method, views, {"tracklet": jnp.arange(8)})
  np.testing.assert_allclose(aux["frac_matched"], 6 / 8)


def test_isr_given_pairs_add_the_instance_term_between_anchor_views():
  from idlearn import losses

  rng = np.random.default_rng(4)
  a0, a1, p = (rng.normal(size=(8, 6)) for _ in range(3))
  views = {"anchor": [_f32(proj=a0), _f32(proj=a1)], "partner": [_f32(proj=p)]}
  cfg = {"matching": "given", "instance_weight": 0.5, "temperature": 0.1}
  method = _method("isr", cfg, _mesh(1), views, FakeMiner("camera_pairs"))
  loss, aux, _ = _call(method, views, {})
  pair, _ = losses.reliability_contrastive(
    *map(jnp.asarray, (a0, p)), jnp.ones(8, bool), temperature=0.1, sigma=0.5
  )
  inst, _ = losses.info_nce(*map(jnp.asarray, (a0, a1)), temperature=0.1)
  np.testing.assert_allclose(aux["instance"], inst, rtol=RTOL)
  np.testing.assert_allclose(loss, pair + 0.5 * inst, rtol=RTOL)


# --- Mixed Barlow Twins ---


def _np_standardize(z, eps):
  z = z - z.mean(0)
  return z / np.sqrt((z**2).mean(0) + eps)


def _np_mixed_bt(z1, z2, zm, perm, lam, lambd, scale):
  n = len(z1)
  a, b = _np_standardize(z1, 1e-5), _np_standardize(z2, 1e-5)
  c = a.T @ b / n
  off = ~np.eye(c.shape[0], dtype=bool)
  bt = ((1 - np.diag(c)) ** 2).sum() + lambd * (c[off] ** 2).sum()
  a, b = _np_standardize(z1, 1e-6), _np_standardize(z2, 1e-6)
  m = _np_standardize(zm, 1e-6)
  reg = 0.0
  for v in (a, b):
    target = lam * a.T @ v / n + (1 - lam) * b[perm].T @ v / n
    reg += ((m.T @ v / n - target) ** 2).sum()
  return bt + scale * lambd * reg, bt


def test_mix_views_mixes_the_second_view_by_the_drawn_permutation():
  rng = np.random.default_rng(4)
  v1, v2 = (rng.normal(size=(8, 4, 2, 3)).astype(np.float32) for _ in "ab")
  mixed, perm, lam = mix_views(
    jax.random.key(0), jnp.asarray(v1), jnp.asarray(v2), alpha=1.0
  )
  lam, perm = float(lam), np.asarray(perm)
  assert 0.0 < lam < 1.0 and sorted(perm) == list(range(8))
  np.testing.assert_allclose(
    mixed, lam * v1 + (1 - lam) * v2[perm], rtol=1e-6, atol=1e-6
  )


def test_mixed_barlow_twins_matches_formula_and_shards():
  rng = np.random.default_rng(5)
  z1, z2, zm = (rng.normal(size=(16, 6)) for _ in range(3))
  perm = rng.permutation(16).astype(np.int32)
  lam = 0.3
  views = {
    "global": [_f32(proj=z1), _f32(proj=z2)],
    "mixed": [_f32(proj=zm)],
  }
  cfg = dict(lambda_offdiag=5e-3, mix_scale=5.0)
  results = []
  for n in (1, 8):
    mesh = _mesh(n)
    method = _method("mixed_barlow_twins", cfg, mesh, views)
    b = {"mix_perm": _put(perm, mesh), "mix_lambda": jnp.float32(lam)}
    results.append(
      _value_and_grad(method, _put(views, mesh), b, ("mixed", 0, "proj"))
    )
  chex.assert_trees_all_close(results[0], results[1], rtol=1e-5, atol=1e-7)
  (loss, aux), _ = results[0]
  want, want_bt = _np_mixed_bt(z1, z2, zm, perm, lam, 5e-3, 5.0)
  np.testing.assert_allclose(loss, want, rtol=RTOL)
  np.testing.assert_allclose(aux["barlow_twins"], want_bt, rtol=RTOL)


# --- DINO / CION: teacher, centre in the method's state, growing K ---


def _np_cion(s, t, center, kk, ts=0.1, tt=0.04):
  q = np.exp(_np_log_softmax((t - center) / tt))
  logp = _np_log_softmax(s / ts)
  terms = []
  for a in range(t.shape[1]):
    for c in range(s.shape[1]):
      if a == c:
        continue
      h = -np.einsum("ik,jk->ij", q[:, a], logp[:, c])  # [b, b]
      same = np.arange(len(s))[:, None] // kk == np.arange(len(s))[None] // kk
      p = len(s) // kk
      # own instance (diagonal, mean over rows) + other instances of its
      # identity (sum over (i, j) pairs of means over identities)
      own = np.trace(h) / len(s)
      others = h[same & ~np.eye(len(s), dtype=bool)].sum() / p
      terms.append((own + others) / (kk * (kk - 1) + 1))
  return np.mean(terms)


def _distill_views(seed=6):
  """2 global crops (student + teacher outputs) and 2 local crops."""
  rng = np.random.default_rng(seed)
  student = [rng.normal(size=(32, 10)) for _ in range(4)]
  teacher = [rng.normal(size=(32, 10)) for _ in range(2)]
  center = rng.normal(size=10) * 0.1
  views = {
    "global": [
      {"dino": jnp.asarray(s, jnp.float32), "teacher": _f32(dino=t)}
      for s, t in zip(student[:2], teacher, strict=True)
    ],
    "local": [_f32(dino=s) for s in student[2:]],
  }
  return views, np.stack(student, 1), np.stack(teacher, 1), center


@pytest.mark.parametrize("step, kk", [(0, 2), (4, 2), (5, 4), (9, 4)])
def test_cion_uses_the_scheduled_k_and_shards(step, kk):
  views, s, t, center = _distill_views()
  cfg = dict(instances=(2, 4), instance_steps=(0, 5))
  extras = {"center": jnp.asarray(center, jnp.float32)}
  (loss, aux), _ = _same_on_1_and_8(
    "cion", cfg, views, {}, ("global", 0, "dino"), extras=extras, step=step
  )
  np.testing.assert_allclose(loss, _np_cion(s, t, center, kk), rtol=RTOL)
  assert float(aux["num_instances"]) == kk


def test_dino_state_and_center_update():
  views, s, t, center = _distill_views(7)
  method = _method("dino", {}, _mesh(1), views)
  shapes = {"dino": jax.ShapeDtypeStruct((32, 10), jnp.float32)}
  np.testing.assert_array_equal(method.init_extras(shapes)["center"], 0.0)
  loss, _, new = _call(method, views, {}, extras={"center": center})
  np.testing.assert_allclose(loss, _np_cion(s, t, center, 1), rtol=RTOL)
  want = 0.9 * center + 0.1 * t.mean(axis=(0, 1))
  np.testing.assert_allclose(new["center"], want, rtol=RTOL)
  decay = method.ema_decay()  # 0.996 -> 1 over the run, cosine
  np.testing.assert_allclose(
    [decay(0), decay(5), decay(10)], [0.996, 0.998, 1.0], rtol=1e-6
  )


def test_cion_schedule_checked():
  views = {"global": [None, None]}
  with pytest.raises(ValueError, match="same"):
    _method("cion", {"instance_steps": (0,)}, _mesh(1), views)
  with pytest.raises(ValueError, match="start at 0"):
    _method("cion", {"instance_steps": (5, 2)}, _mesh(1), views)
  with pytest.raises(ValueError, match="multiple of each"):
    _method("cion", {"instances": (2, 3)}, _mesh(1), views)


# --- DomainMix ---


def _np_domainmix(out, batch, mined, cfg):
  dom, label, ids = batch["domain"], batch["label"], batch["id"]
  src, tgt = dom == 0, dom == 1
  c = out["logits"].shape[1]
  eps = cfg["label_smoothing"]
  target = np.full((len(label), c), eps / c)
  target[np.arange(len(label)), np.where(src, label, 0)] += 1 - eps
  ce = -(target * _np_log_softmax(out["logits"])).sum(1)
  ce_src = ce[src].mean()
  cos = _np_unit(out["feat"]) @ _np_unit(mined["centroids"]).T / cfg["temp"]
  cos[:, mined["num_clusters"] :] = -1e9
  ce_tgt = -_np_log_softmax(cos)[np.arange(len(label)), label][tgt].mean()
  emb = out["emb"]
  d = np.sqrt(((emb[:, None] - emb[None]) ** 2).sum(-1))
  same = ids[:, None] == ids[None]
  hinge = [
    max(d[i][same[i] & (np.arange(len(ids)) != i)].max()
        - d[i][~same[i]].min() + 0.3, 0)
    for i in range(len(ids))
  ]  # fmt: skip
  tri = np.mean(hinge)
  logp = _np_log_softmax(out["domain_logits"])
  disc = -logp[np.arange(len(dom)), dom].mean()
  lp = _np_log_softmax(out["domain_logits_adv"])
  bal = (np.exp(lp) * lp).sum(1).mean() + 0.5 * lp.shape[1]
  return ce_src + ce_tgt + tri + disc + bal, dict(
    ce_src=ce_src, ce_tgt=ce_tgt, triplet=tri, disc=disc, balance=bal
  )


def _domainmix_inputs(seed=8, n=16, d=6):
  rng = np.random.default_rng(seed)
  out = {
    "emb": rng.normal(size=(n, d)),
    "feat": rng.normal(size=(n, d)),
    "logits": rng.normal(size=(n, 5)),
    "domain_logits": rng.normal(size=(n, 2)),
    "domain_logits_adv": rng.normal(size=(n, 2)),
  }
  domain = np.repeat([0, 1], n // 2).astype(np.int32)
  label = np.concatenate([np.repeat([0, 3], 4), np.repeat([1, 2], 4)])
  ids = np.where(domain == 1, label + 1_000_000, label)
  batch = {"domain": domain, "label": label.astype(np.int32), "id": ids}
  mined = {
    "centroids": rng.normal(size=(6, d)).astype(np.float32),
    "num_clusters": np.int32(3),
    "generation": np.int32(1),
  }
  return out, batch, mined


def test_domainmix_matches_formula_and_shards():
  out, batch, mined = _domainmix_inputs()
  views = {"image": [_f32(**out)]}
  # a new clustering (generation 1 vs the method's 0): its centroids count
  extras = {"centroids": jnp.zeros((6, 6)), "generation": jnp.int32(0)}
  (loss, aux), _ = _same_on_1_and_8(
    "domainmix", {}, views, batch, ("image", 0, "feat"),
    miner=FakeMiner("target_clusters"), extras=extras,
    mined=jax.tree.map(jnp.asarray, mined),
  )  # fmt: skip
  want, terms = _np_domainmix(
    out, batch, mined, {"label_smoothing": 0.1, "temp": 0.05}
  )
  np.testing.assert_allclose(loss, want, rtol=RTOL)
  for k, v in terms.items():
    np.testing.assert_allclose(aux[k], v, rtol=RTOL, err_msg=k)


def test_domainmix_centroids_restart_at_each_clustering_then_follow():
  rng = np.random.default_rng(9)
  out, _, mined = _domainmix_inputs()
  domain = np.tile([0, 0, 1, 1, 1, 1, 0, 0], 2).astype(np.int32)
  label = np.tile([2, 2, 0, 0, 1, 1, 0, 1], 2).astype(np.int32)
  batch = {"domain": domain, "label": label, "id": label + 10 * domain}
  own = _np_unit(rng.normal(size=(6, 6)))
  mined["centroids"] = _np_unit(rng.normal(size=(6, 6))).astype(np.float32)
  method = _method(
    "domainmix", {}, _mesh(1), {"image": [0]}, FakeMiner("target_clusters")
  )
  f = _np_unit(out["feat"])
  # the same generation: its own memory; an older one: the new clustering
  for generation, start in ((1, own), (0, mined["centroids"])):
    extras = {
      "centroids": jnp.asarray(own),
      "generation": jnp.int32(generation),
    }
    _, _, new = _call(
      method, {"image": [_f32(**out)]}, batch, extras=extras, mined=mined
    )
    assert int(new["generation"]) == 1  # the miner's, from now on
    for j, rows in ((0, [2, 3, 10, 11]), (1, [4, 5, 12, 13])):
      want = _np_unit(0.2 * start[j] + 0.8 * f[rows].mean(0))
      np.testing.assert_allclose(new["centroids"][j], want, rtol=1e-5)
    np.testing.assert_allclose(new["centroids"][2], start[2], rtol=1e-6)
