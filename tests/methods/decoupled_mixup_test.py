"""The decoupled_mixup method: its loss on given network outputs vs a
float64 NumPy reference of the formula, the mixed view `prepare` makes,
and 8 devices vs 1."""

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


def _method(cfg, mesh, num_classes=6):
  setup = fake_setup(mesh=mesh, num_classes=lambda: num_classes)
  return methods.make_method({"name": "decoupled_mixup", **cfg}, setup)


def _loss(method, views, batch):
  ctx = methods.Context(
    extras={}, mined=None, step=jnp.int32(0), rng=jax.random.key(0)
  )
  return method.loss(FakeNet(), views, batch, ctx)


def _put(tree, mesh):
  return jax.device_put(tree, sharding.batch_sharding(mesh))


# --- float64 NumPy references, written from the formulas ---


def _np_log_softmax(z):
  z = z - z.max()
  return z - np.log(np.exp(z).sum())


def _np_batch_hard(emb, ids, margin=0.3):
  d = np.sqrt(((emb[:, None] - emb[None]) ** 2).sum(-1))
  hinge = []
  for i in range(len(ids)):
    pos = (ids == ids[i]) & (np.arange(len(ids)) != i)
    hinge.append(max(d[i][pos].max() - d[i][ids != ids[i]].min() + margin, 0))
  return np.mean(hinge)


def _np_smoothed_ce(logits, labels, eps=0.1):
  out = []
  for z, y in zip(logits, labels, strict=True):
    target = np.full(len(z), eps / len(z))
    target[y] += 1 - eps
    out.append(-(target * _np_log_softmax(z)).sum())
  return np.mean(out)


def _np_decoupled_mixup(logits, ya, yb, lam, eta, mode, power):
  """Mixup CE + eta_a L_a + eta_b L_b per row (openmixup), mean."""
  out = []
  for z, a, b in zip(logits, ya, yb, strict=True):
    lp = _np_log_softmax(z)
    loss = -(lam * lp[a] + (1 - lam) * lp[b])
    if a != b:
      weight_a, weight_b = {
        "both": (lam, 1 - lam),
        "less": (lam, 0.0) if lam < 0.5 else (0.0, 1 - lam),
        "more": (lam, 0.0) if lam >= 0.5 else (0.0, 1 - lam),
      }[mode]
      rest = np.exp(np.delete(z, [a, b])).sum()  # the classes not mixed
      l_a = -np.log(np.exp(z[a]) / (np.exp(z[a]) + rest))
      l_b = -np.log(np.exp(z[b]) / (np.exp(z[b]) + rest))
      if weight_a:
        loss += eta * weight_a**power * l_a
      if weight_b:
        loss += eta * weight_b**power * l_b
    out.append(loss)
  return np.mean(out)


def _inputs(seed=0, b=16, d=6, c=6):
  rng = np.random.default_rng(seed)
  labels = np.repeat(rng.permutation(c)[:4], 4).astype(np.int32)  # P4 x K4
  perm = rng.permutation(b)
  perm[:2] = [1, 0]  # rows 0 and 1 share a label: unmixed rows
  clean = {
    "emb": rng.normal(size=(b, d)),
    "logits": rng.normal(size=(b, c)) * 2,
  }
  mixed = {"logits": rng.normal(size=(b, c)) * 2}
  return labels, perm, clean, mixed


@pytest.mark.parametrize(
  "cfg",
  [
    {},  # openmixup's ImageNet setting: eta 0.1, both, lam_power 1
    {"eta": 0.0},  # plain mixup CE
    {"eta": 0.5, "eta_mode": "less", "lam_power": 0.5, "mix_weight": 0.7},
    {"eta": 0.3, "eta_mode": "more", "lam_power": 0.0, "ce_weight": 0.0},
  ],
)
def test_loss_matches_the_formula_on_1_and_8_devices(cfg):
  labels, perm, clean, mixed = _inputs()
  lam = 0.3
  views = {
    "image": [{k: jnp.asarray(v, jnp.float32) for k, v in clean.items()}],
    "mixed": [{"logits": jnp.asarray(mixed["logits"], jnp.float32)}],
  }
  batch = {
    "id": labels + 100,
    "label": labels,
    "mix_label_b": labels[perm],
    "mix_lambda": np.full(16, lam, np.float32),
  }
  results = []
  for n in (1, 8):
    mesh = _mesh(n)
    method = _method(cfg, mesh)
    b, v = _put(batch, mesh), _put(views, mesh)

    def f(logits, method=method, b=b, v=v):
      v = {**v, "mixed": [{"logits": logits}]}
      loss, aux, _ = _loss(method, v, b)
      return loss, aux

    vg = jax.jit(jax.value_and_grad(f, has_aux=True))
    results.append(vg(_put(views["mixed"][0]["logits"], mesh)))
  chex.assert_trees_all_close(results[0], results[1], rtol=1e-5, atol=1e-7)
  (loss, aux), grad = results[0]
  full = {"eta": 0.1, "eta_mode": "both", "lam_power": 1.0, **cfg}
  dm = _np_decoupled_mixup(
    mixed["logits"], labels, labels[perm], lam,
    full["eta"], full["eta_mode"], full["lam_power"],
  )  # fmt: skip
  tri = _np_batch_hard(clean["emb"], labels)
  ce = _np_smoothed_ce(clean["logits"], labels)
  want = tri + cfg.get("ce_weight", 1.0) * ce + cfg.get("mix_weight", 1.0) * dm
  np.testing.assert_allclose(aux["dm"], dm, rtol=RTOL)
  np.testing.assert_allclose(aux["triplet"], tri, rtol=RTOL)
  np.testing.assert_allclose(loss, want, rtol=RTOL)
  assert np.abs(np.asarray(grad)).max() > 0


def test_prepare_mixes_the_batch_with_its_permutation_on_1_and_8_devices():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(16, 4, 2, 3)).astype(np.float32)
  labels = np.repeat(np.arange(4), 4).astype(np.int32)
  batch = {"id": labels + 7, "label": labels}
  outs = []
  for n in (1, 8):
    mesh = _mesh(n)
    method = _method({"alpha": 0.4}, mesh)
    prepare = jax.jit(method.prepare)
    outs.append(
      prepare(jax.random.key(3), {"image": (_put(x, mesh),)}, _put(batch, mesh))
    )
  chex.assert_trees_all_close(outs[0], outs[1], rtol=0, atol=0)
  views, got = outs[0]
  perm, lam = np.asarray(got["mix_perm"]), np.asarray(got["mix_lambda"])
  assert sorted(perm) == list(range(16))  # a permutation of the batch
  assert np.all(lam == lam[0]) and 0 < lam[0] < 1  # one lam per batch
  np.testing.assert_array_equal(got["mix_label_b"], labels[perm])
  want = lam[0] * x + (1 - lam[0]) * x[perm]
  np.testing.assert_allclose(views["mixed"][0], want, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(views["image"][0], x)


def test_alpha_zero_is_the_supervised_method():
  labels, _, clean, _ = _inputs(2)
  views = {"image": [{k: jnp.asarray(v) for k, v in clean.items()}]}
  batch = {"id": jnp.asarray(labels), "label": jnp.asarray(labels)}
  mesh = _mesh(1)
  method = _method({"alpha": 0.0}, mesh)
  assert method.prepare(jax.random.key(0), views, batch) == (views, batch)
  setup = method.setup
  sup = methods.make_method({"name": "supervised"}, setup)
  got, aux, _ = jax.jit(lambda v, b: _loss(method, v, b))(views, batch)
  want, want_aux, _ = jax.jit(lambda v, b: _loss(sup, v, b))(views, batch)
  np.testing.assert_array_equal(got, want)
  assert set(aux) == set(want_aux)


def test_bad_configs_name_the_field():
  mesh = _mesh(1)
  with pytest.raises(ValueError, match="eta_mode"):
    _method({"eta_mode": "all"}, mesh)
  with pytest.raises(ValueError, match="alpha=-1"):
    _method({"alpha": -1.0}, mesh)
  with pytest.raises(ValueError, match="no classifier"):
    _method({"loss": "triplet"}, mesh)
  _method({"loss": "triplet", "alpha": 0.0}, mesh)  # no mixing: allowed
