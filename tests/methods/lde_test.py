"""The lde method: its loss on given network outputs vs the sum of its
terms written in NumPy (the terms' formulas are checked in
tests/losses/domain_expansion_test.py), the covariance state it carries,
lam's ramp, the config checks, and 8 devices vs 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fake_setup import fake_setup

from idlearn import errors, methods, sharding

N, C, D, M = 16, 5, 6, 2


class FakeNet:
  """Stands in for `methods.Network`: the view is already the outputs."""

  def __init__(self, kernel):
    self.params = {"classifier": {"kernel": kernel}}

  def __call__(self, x):
    return x


def _method(mesh, num_domains=M, **cfg):
  setup = fake_setup(
    mesh=mesh, num_classes=lambda: C, num_domains=lambda: num_domains
  )
  return methods.make_method({"name": "lde", **cfg}, setup)


def _case(seed=0):
  rng = np.random.default_rng(seed)
  f32 = lambda *s: jnp.float32(rng.normal(size=s))  # noqa: E731
  out = {
    "emb": f32(N, D),
    "domain": f32(N, D),
    "domain_feat": f32(N, D),
    "eval": f32(N, D),
    "domain_logits": f32(N, M),
  }
  kernel = f32(D, C)
  out["logits"] = out["eval"] @ kernel
  ids = np.repeat(np.arange(4), 4)
  batch = {
    "id": jnp.int32(ids),
    "label": jnp.int32(ids),
    "domain": jnp.int32(ids % M),
  }
  return out, kernel, batch


def _np_triplet(emb, ids, margin=0.3):
  d = np.sqrt(((emb[:, None] - emb[None]) ** 2).sum(-1))
  h = [
    max(d[i][ids == ids[i]].max() - d[i][ids != ids[i]].min() + margin, 0)
    for i in range(len(ids))
  ]
  return np.mean(h)


def _loss(method, out, kernel, batch, step=5, extras=None):
  extras = extras or method.init_extras({"domain_feat": out["domain_feat"]})
  ctx = methods.Context(
    extras=extras, mined=None, step=jnp.int32(step), rng=jax.random.key(0)
  )
  return method.loss(FakeNet(kernel), {"image": (out,)}, batch, ctx)


def test_loss_is_the_sum_of_its_terms_with_the_updated_covariance():
  from idlearn import losses

  mesh = sharding.make_data_mesh(jax.devices()[:1])
  method = _method(mesh, lam=0.8, lift_weight=0.5, domain_weight=2.0)
  out, kernel, batch = _case()
  total, aux, extras = _loss(method, out, kernel, batch, step=5)
  feat = np.float64(out["domain_feat"])
  dom = np.asarray(batch["domain"])
  for m in range(M):  # one batch seen: its own covariance per domain
    rows = feat[dom == m]
    np.testing.assert_allclose(extras["count"][m], len(rows))
    np.testing.assert_allclose(
      extras["cov"][m], np.cov(rows.T, bias=True), rtol=1e-4, atol=1e-5
    )
  lam = 0.8 * 5 / 10  # ramped: step / total_steps
  np.testing.assert_allclose(aux["lam"], lam, rtol=1e-6)
  ce, _ = losses.expanded_ce(
    out["logits"], kernel.T, batch["label"], batch["domain"],
    extras["cov"], lam=lam, label_smoothing=0.1,
  )  # fmt: skip
  ls, _ = losses.lift_suppress(out["emb"], out["domain"], batch["domain"])
  z = np.float64(out["domain_logits"])
  logp = z - np.log(np.exp(z).sum(1, keepdims=True))
  dom_ce = -logp[np.arange(N), dom].mean()
  tri = _np_triplet(np.float64(out["emb"]), np.asarray(batch["id"]))
  np.testing.assert_allclose(aux["triplet"], tri, rtol=1e-5)
  np.testing.assert_allclose(aux["domain_ce"], dom_ce, rtol=1e-5)
  np.testing.assert_allclose(
    total, tri + ce + 2.0 * dom_ce + 0.5 * ls, rtol=1e-5
  )
  # a second step adds its batch to the statistics
  _, _, again = _loss(method, out, kernel, batch, extras=extras)
  np.testing.assert_allclose(again["count"], 2 * extras["count"])
  np.testing.assert_allclose(again["cov"], extras["cov"], atol=1e-5)


def test_eight_devices_equal_one():
  out, kernel, batch = _case(seed=1)
  results = []
  for n in (1, 8):
    mesh = sharding.make_data_mesh(jax.devices()[:n])
    method = _method(mesh)
    put = jax.device_put((out, batch), sharding.batch_sharding(mesh))
    step = jax.jit(lambda o, b, m=method: _loss(m, o, kernel, b))
    results.append(step(*put))
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
    *results,
  )


def test_config_checks_name_the_field():
  mesh = sharding.make_data_mesh(jax.devices()[:1])
  with pytest.raises(errors.ConfigError, match="lam=-1"):
    _method(mesh, lam=-1.0)
  with pytest.raises(errors.ConfigError, match="num_domains=1"):
    _method(mesh, num_domains=1)
  setup = fake_setup(mesh=mesh, input={}, total_steps=1, num_classes=lambda: C)
  with pytest.raises(errors.ConfigError, match="config.input.domain_pattern"):
    methods.make_method({"name": "lde"}, setup)
