"""The pure train step: gradients, EMA, BatchNorm, device-count invariance,
and the method protocol's hooks (prepare, teacher, extras)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fake_setup import fake_setup

from idlearn import losses, methods, sharding
from idlearn.methods import base
from idlearn.training import state, step


def _setup(tiny, mesh):
  return fake_setup(
    mesh=mesh,
    make_encoder=tiny.tiny_encoder,
    input={"name": "synthetic"},
    views={"global": 2},
    num_classes=lambda: 50,
  )


def _init(network, batch, tiny, ema=False, extras=None):
  views = tiny.views_fn(jax.random.PRNGKey(0), batch["image"])["global"]
  variables = network.init(jax.random.PRNGKey(1), views[0])
  tx = optax.sgd(0.1)
  st = state.create(
    variables,
    tx,
    jax.random.PRNGKey(2),
    ema=ema,
    extras={"method": extras or {}},
  )
  return st, tx


def _step_fn(method, network, tx, views_fn):
  return jax.jit(
    functools.partial(
      step.train_step,
      method=method,
      network=network,
      tx=tx,
      views_fn=views_fn,
    )
  )


def _simclr(tiny, mesh):
  cfg = {"name": "simclr", "temperature": 0.2, "proj_layers": 0}
  return methods.make_method(cfg, _setup(tiny, mesh))


def test_update_is_sgd_on_the_reference_gradient(tiny):
  mesh = sharding.make_data_mesh(jax.devices()[:1])
  method = _simclr(tiny, mesh)
  network = method.network()
  batch = next(iter(tiny.SyntheticLoader()))
  st, tx = _init(network, batch, tiny)
  fn = _step_fn(method, network, tx, tiny.views_fn)
  new, metrics = fn(st, sharding.put_local_batch(batch, mesh))
  # Reference: the same forward written out directly, views from
  # fold_in(rng, step 0), BatchNorm statistics threaded view to view.
  views = tiny.views_fn(jax.random.fold_in(st.rng, 0), batch["image"])

  def loss(params):
    z, stats = [], st.batch_stats
    for v in views["global"]:
      out, upd = network.apply(
        {"params": params, "batch_stats": stats},
        v,
        train=True,
        mutable=["batch_stats"],
      )
      stats = upd["batch_stats"]
      z.append(out["emb"])
    return losses.info_nce(*z, temperature=0.2)[0], stats

  (want_loss, want_stats), g = jax.value_and_grad(loss, has_aux=True)(st.params)
  np.testing.assert_allclose(metrics["loss"], want_loss, rtol=1e-6)
  np.testing.assert_allclose(
    metrics["grad_norm"], optax.tree.norm(g), rtol=1e-5
  )
  jax.tree.map(
    lambda a, p, d: np.testing.assert_allclose(
      a, p - 0.1 * d, rtol=1e-5, atol=1e-7
    ),
    new.params,
    st.params,
    g,
  )
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
    new.batch_stats,
    want_stats,
  )
  assert int(new.step) == 1


def test_same_result_on_one_and_eight_devices(tiny):
  results = []
  batch = next(iter(tiny.SyntheticLoader()))
  for n in (1, 8):
    mesh = sharding.make_data_mesh(jax.devices()[:n])
    method = _simclr(tiny, mesh)
    network = method.network()
    st, tx = _init(network, batch, tiny)
    fn = _step_fn(method, network, tx, tiny.views_fn)
    st = jax.device_put(st, sharding.replicated(mesh))
    for _ in range(2):
      st, m = fn(st, sharding.put_local_batch(batch, mesh))
    results.append((sharding.to_host(st.params), float(m["loss"])))
  np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
    results[0][0],
    results[1][0],
  )


class _Hooks(base.Method):
  """A method exercising every hook: prepare adds a view, the loss reads
  the EMA teacher and counts its calls in its extras."""

  NAMES = ("hooks",)
  VIEWS = {"global": 2}
  seen: dict = {}

  def network(self):
    from idlearn.methods.contrastive import ProjectionNet

    return ProjectionNet(encoder=self.setup.make_encoder(), proj_layers=0)

  def ema_decay(self):
    return lambda step: jnp.float32(0.9)

  def init_extras(self, out_shapes):
    return {"n": jnp.int32(0)}

  def prepare(self, rng, views, batch):
    return {**views, "doubled": (views["global"][0] * 2.0,)}, batch

  def loss(self, net, views, batch, ctx):
    self.seen["roles"] = sorted(views)
    teacher_emb = net.teacher(views["global"][0])["emb"]
    student = net(views["doubled"][0])["emb"]
    value = jnp.mean((student - 2 * teacher_emb) ** 2)
    aux = {"teacher_emb": jnp.sum(teacher_emb), "n": ctx.extras["n"]}
    return value, aux, {"n": ctx.extras["n"] + 1}


def test_method_hooks_prepare_teacher_extras_and_ema(tiny):
  """prepare adds a view, the EMA teacher sees a view with batch statistics
  of its own (running stats untouched), extras are updated, and the EMA
  follows the new parameters."""
  mesh = sharding.make_data_mesh(jax.devices()[:1])
  method = _Hooks("hooks", {"name": "hooks"}, _setup(tiny, mesh))
  network = method.network()
  batch = next(iter(tiny.SyntheticLoader()))
  st, tx = _init(network, batch, tiny, ema=True, extras={"n": jnp.int32(0)})
  st = st.replace(ema_params=jax.tree.map(lambda p: p * 1.5, st.params))
  fn = _step_fn(method, network, tx, tiny.views_fn)
  new, metrics = fn(st, sharding.put_local_batch(batch, mesh))
  assert method.seen["roles"] == ["doubled", "global"]
  views = tiny.views_fn(jax.random.fold_in(st.rng, 0), batch["image"])
  want, _ = network.apply(
    {"params": st.ema_params, "batch_stats": st.batch_stats},
    views["global"][0],
    train=True,
    mutable=["batch_stats"],
  )
  np.testing.assert_allclose(
    metrics["teacher_emb"], np.sum(want["emb"]), rtol=1e-5
  )
  assert int(metrics["n"]) == 0 and int(new.extras["method"]["n"]) == 1
  jax.tree.map(
    lambda e, e0, p: np.testing.assert_allclose(
      e, 0.9 * e0 + 0.1 * p, rtol=1e-6, atol=1e-7
    ),
    new.ema_params,
    st.ema_params,
    new.params,
  )
  st_no_ema, _ = _init(network, batch, tiny, extras={"n": jnp.int32(0)})
  with pytest.raises(ValueError, match="ema_decay"):
    fn(st_no_ema, sharding.put_local_batch(batch, mesh))
