"""The seed methods' objectives (training glue) vs float64 NumPy references
written from the papers' formulas, and 8 devices vs 1."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from idlearn.training import objectives, sharding
from idlearn.training.objectives import distillation, domain, mixing

RTOL = 1e-5


def _mesh(n):
  return sharding.make_data_mesh(jax.devices()[:n])


def _np_unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _np_log_softmax(x, axis=-1):
  x = x - x.max(axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis, keepdims=True))


def _put(tree, mesh):
  return jax.device_put(tree, sharding.batch_sharding(mesh))


def _value_and_grad(obj, outs, batch, argnum_view=0, key="proj", **kw):
  """(loss, aux), d loss / d outs[argnum_view][key], under jit."""

  def f(x):
    o = [dict(v) for v in outs]
    o[argnum_view] = {**o[argnum_view], key: x}
    return obj(o, batch, **kw)

  return jax.jit(jax.value_and_grad(f, has_aux=True))(outs[argnum_view][key])


def _same_on_1_and_8(name, cfg, outs, batch, key="proj", **kw):
  results = []
  for n in (1, 8):
    mesh = _mesh(n)
    obj = objectives.make_objective({"name": name, **cfg}, mesh)
    results.append(
      _value_and_grad(obj, _put(outs, mesh), _put(batch, mesh), key=key, **kw)
    )
  chex.assert_trees_all_close(results[0], results[1], rtol=1e-5, atol=1e-7)
  return results[0]


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
  cfg = dict(
    on="proj", margin=0.2, mining="semi_hard", squared=True, normalize=True
  )
  outs = [{"proj": jnp.asarray(emb, jnp.float32)}]
  (loss, aux), _ = _same_on_1_and_8("triplet", cfg, outs, {"id": ids})
  np.testing.assert_allclose(loss, _np_semi_hard(emb, ids, 0.2), rtol=RTOL)
  assert np.isfinite(aux["frac_active"])


# --- ArcFace / CosFace on the model's class weights ---


def _np_margin(emb, w, labels, scale, target):
  cos = _np_unit(emb) @ _np_unit(w).T
  logits = scale * cos
  rows = np.arange(len(labels))
  logits[rows, labels] = scale * target(cos[rows, labels])
  return -_np_log_softmax(logits)[rows, labels].mean()


@pytest.mark.parametrize("name", ["arcface", "cosface"])
def test_margin_objectives_match_formula_and_shard(name):
  rng = np.random.default_rng(1)
  emb, w = rng.normal(size=(16, 8)), rng.normal(size=(5, 8))
  labels = rng.integers(0, 5, size=16).astype(np.int32)
  m = {"arcface": 0.5, "cosface": 0.35}[name]
  target = {
    "arcface": lambda c: np.cos(np.arccos(c) + m),
    "cosface": lambda c: c - m,
  }[name]
  outs = [
    {
      "proj": jnp.asarray(emb, jnp.float32),
      "class_weights": jnp.asarray(w, jnp.float32),
    }
  ]
  batch = {"id": labels + 100, "label": labels}
  # class weights are replicated, not split: compare both gradients
  results = []
  for n in (1, 8):
    mesh = _mesh(n)
    obj = objectives.make_objective(
      {"name": name, "scale": 30.0, "margin": m}, mesh
    )
    b = _put(batch, mesh)

    def f(e, cw, obj=obj, b=b):
      return obj([{"proj": e, "class_weights": cw}], b)

    results.append(
      jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(
        _put(outs[0]["proj"], mesh), jnp.asarray(w, jnp.float32)
      )
    )
  chex.assert_trees_all_close(results[0], results[1], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(
    results[0][0][0], _np_margin(emb, w, labels, 30.0, target), rtol=RTOL
  )


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
  outs = [
    {"proj": jnp.asarray(za, jnp.float32)},
    {"proj": jnp.asarray(zb, jnp.float32)},
  ]
  batch = {"tracklet": track, "id": track}
  (loss, aux), grad = _same_on_1_and_8("isr", cfg, outs, batch)
  want, best = _np_isr(za, zb, 0.1, 0.5)
  np.testing.assert_array_equal(best, np.arange(8))  # the true partners
  np.testing.assert_allclose(loss, want, rtol=1e-4)
  assert float(aux["match_acc"]) == 1.0 and float(aux["frac_matched"]) == 1.0
  assert np.isfinite(np.asarray(grad)).all() and np.abs(grad).max() > 0
  # The pairing of the rows is not used: shuffling frame B's rows (and
  # their tracklets) changes nothing.
  shuffle = rng.permutation(8)
  obj = objectives.make_objective({"name": "isr", **cfg}, _mesh(1))
  shuffled = [outs[0], {"proj": outs[1]["proj"][shuffle]}]
  got, _ = jax.jit(lambda o: obj(o, {}))(shuffled)
  np.testing.assert_allclose(got, loss, rtol=1e-5)


def test_isr_min_similarity_drops_unreliable_matches():
  rng = np.random.default_rng(3)
  za = rng.normal(size=(8, 6))
  zb = za.copy()
  zb[:2] = -za[:2]  # two instances have no good partner
  obj = objectives.make_objective(
    {"name": "isr", "min_similarity": 0.5}, _mesh(1)
  )
  outs = [{"proj": jnp.asarray(za)}, {"proj": jnp.asarray(zb)}]
  _, aux = obj(outs, {"tracklet": jnp.arange(8)})
  np.testing.assert_allclose(aux["frac_matched"], 6 / 8)


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
  views, batch = mixing.mix_views(
    jax.random.key(0), (jnp.asarray(v1), jnp.asarray(v2)), {}, alpha=1.0
  )
  lam, perm = float(batch["mix_lambda"]), np.asarray(batch["mix_perm"])
  assert 0.0 < lam < 1.0 and sorted(perm) == list(range(8))
  np.testing.assert_allclose(
    views[2], lam * v1 + (1 - lam) * v2[perm], rtol=1e-6, atol=1e-6
  )


def test_mixed_barlow_twins_matches_formula_and_shards():
  rng = np.random.default_rng(5)
  z1, z2, zm = (rng.normal(size=(16, 6)) for _ in range(3))
  perm = rng.permutation(16).astype(np.int32)
  lam = 0.3
  outs = [{"proj": jnp.asarray(z, jnp.float32)} for z in (z1, z2, zm)]
  batch = {"mix_perm": perm, "mix_lambda": np.float32(lam)}
  cfg = dict(lambda_offdiag=5e-3, mix_scale=5.0)
  results = []
  for n in (1, 8):
    mesh = _mesh(n)
    obj = objectives.make_objective({"name": "mixed_barlow_twins", **cfg}, mesh)
    b = {"mix_perm": _put(perm, mesh), "mix_lambda": jnp.float32(lam)}
    results.append(_value_and_grad(obj, _put(outs, mesh), b, argnum_view=2))
  chex.assert_trees_all_close(results[0], results[1], rtol=1e-5, atol=1e-7)
  (loss, aux), _ = results[0]
  want, want_bt = _np_mixed_bt(z1, z2, zm, perm, lam, 5e-3, 5.0)
  np.testing.assert_allclose(loss, want, rtol=RTOL)
  np.testing.assert_allclose(aux["barlow_twins"], want_bt, rtol=RTOL)
  del batch


# --- DINO / CION: teacher, centre in extras, growing K ---


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


def _distill_inputs(seed=6):
  rng = np.random.default_rng(seed)
  student = [rng.normal(size=(32, 10)) for _ in range(4)]  # 2 global + 2
  teacher = [rng.normal(size=(32, 10)) for _ in range(2)]
  center = rng.normal(size=10) * 0.1
  return student, teacher, center


@pytest.mark.parametrize("step, kk", [(0, 2), (4, 2), (5, 4), (9, 4)])
def test_cion_uses_the_scheduled_k_and_shards(step, kk):
  student, teacher, center = _distill_inputs()
  cfg = dict(instances=(2, 4), instance_steps=(0, 5))
  outs = [{"dino": jnp.asarray(s, jnp.float32)} for s in student]
  teach = [{"dino": jnp.asarray(t, jnp.float32)} for t in teacher]
  extras = {"center": jnp.asarray(center, jnp.float32)}
  results = []
  for n in (1, 8):
    mesh = _mesh(n)
    obj = objectives.make_objective({"name": "cion", **cfg}, mesh)
    results.append(
      _value_and_grad(
        obj,
        _put(outs, mesh),
        {},
        key="dino",
        teacher=_put(teach, mesh),
        extras=extras,
        step=jnp.int32(step),
      )
    )
  chex.assert_trees_all_close(results[0], results[1], rtol=1e-5, atol=1e-7)
  (loss, aux), _ = results[0]
  s, t = np.stack(student, 1), np.stack(teacher, 1)
  np.testing.assert_allclose(loss, _np_cion(s, t, center, kk), rtol=RTOL)
  assert float(aux["num_instances"]) == kk


def test_dino_objective_state_and_center_update():
  student, teacher, center = _distill_inputs(7)
  obj = objectives.make_objective({"name": "dino"}, _mesh(1))
  assert obj.teacher_views == 2
  shapes = {"dino": jax.ShapeDtypeStruct((32, 10), jnp.float32)}
  np.testing.assert_array_equal(obj.init_extras(shapes)["center"], 0.0)
  outs = [{"dino": jnp.asarray(s)} for s in student]
  teach = [{"dino": jnp.asarray(t)} for t in teacher]
  loss, _ = obj(outs, {}, teach, extras={"center": center}, step=0)
  s, t = np.stack(student, 1), np.stack(teacher, 1)
  np.testing.assert_allclose(loss, _np_cion(s, t, center, 1), rtol=RTOL)
  new = obj.update_extras({"center": jnp.asarray(center)}, outs, teach, {})
  want = 0.9 * center + 0.1 * t.mean(axis=(0, 1))
  np.testing.assert_allclose(new["center"], want, rtol=RTOL)
  with pytest.raises(ValueError, match="teacher"):
    obj(outs, {}, None, extras={"center": center}, step=0)


def test_cion_schedule_checked():
  with pytest.raises(ValueError, match="same"):
    distillation.make_distillation(
      "cion", {**objectives.FIELDS["cion"], "instance_steps": (0,)}, _mesh(1)
    )
  with pytest.raises(ValueError, match="start at 0"):
    distillation.make_distillation(
      "cion", {**objectives.FIELDS["cion"], "instance_steps": (5, 2)}, _mesh(1)
    )


# --- DomainMix ---


def _np_domainmix(out, batch, ex, cfg):
  dom, label, ids = batch["domain"], batch["label"], batch["id"]
  src, tgt = dom == 0, dom == 1
  c = out["logits"].shape[1]
  eps = cfg["label_smoothing"]
  target = np.full((len(label), c), eps / c)
  target[np.arange(len(label)), np.where(src, label, 0)] += 1 - eps
  ce = -(target * _np_log_softmax(out["logits"])).sum(1)
  ce_src = ce[src].mean()
  cos = _np_unit(out["feat"]) @ _np_unit(ex["centroids"]).T / cfg["temp"]
  cos[:, ex["num_clusters"] :] = -1e9
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


def test_domainmix_matches_formula_and_shards():
  rng = np.random.default_rng(8)
  n, d = 16, 6
  out = {
    "emb": rng.normal(size=(n, d)),
    "feat": rng.normal(size=(n, d)),
    "logits": rng.normal(size=(n, 5)),
    "domain_logits": rng.normal(size=(n, 2)),
    "domain_logits_adv": rng.normal(size=(n, 2)),
  }
  domain_ = np.repeat([0, 1], 8).astype(np.int32)
  label = np.concatenate([np.repeat([0, 3], 4), np.repeat([1, 2], 4)])
  ids = np.where(domain_ == 1, label + 1_000_000, label)
  batch = {"domain": domain_, "label": label.astype(np.int32), "id": ids}
  ex = {
    "centroids": rng.normal(size=(6, d)),
    "num_clusters": np.int32(3),
  }
  outs = [{k: jnp.asarray(v, jnp.float32) for k, v in out.items()}]
  ex_j = {k: jnp.asarray(v) for k, v in ex.items()}
  (loss, aux), _ = _same_on_1_and_8(
    "domainmix", {}, outs, batch, key="feat", extras=ex_j
  )
  want, terms = _np_domainmix(
    out, batch, ex, {"label_smoothing": 0.1, "temp": 0.05}
  )
  np.testing.assert_allclose(loss, want, rtol=RTOL)
  for k, v in terms.items():
    np.testing.assert_allclose(aux[k], v, rtol=RTOL, err_msg=k)


def test_domainmix_centroids_follow_the_batch_with_momentum():
  rng = np.random.default_rng(9)
  feat = rng.normal(size=(8, 4))
  cent = _np_unit(rng.normal(size=(3, 4)))
  batch = {
    "domain": np.array([0, 0, 1, 1, 1, 1, 0, 0]),
    "label": np.array([2, 2, 0, 0, 1, 1, 0, 1]),
  }
  obj = domain.make_domainmix(objectives.FIELDS["domainmix"], _mesh(1))
  new = obj.update_extras(
    {"centroids": jnp.asarray(cent)}, [{"feat": jnp.asarray(feat)}], None, batch
  )["centroids"]
  f = _np_unit(feat)
  for j, rows in ((0, [2, 3]), (1, [4, 5])):
    want = _np_unit(0.2 * cent[j] + 0.8 * f[rows].mean(0))
    np.testing.assert_allclose(new[j], want, rtol=1e-5)
  np.testing.assert_allclose(new[2], cent[2], rtol=1e-6)  # not in batch
