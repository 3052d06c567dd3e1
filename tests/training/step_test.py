"""The pure train step: gradients, EMA, BatchNorm, device-count invariance."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from idlearn import losses
from idlearn.training import objectives, optim, sharding, state, step

_spec = importlib.util.spec_from_file_location(
  "tiny", Path(__file__).with_name("tiny.py")
)
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)


def _setup(mesh, ema=False):
  model = tiny.tiny_model()
  batch = next(iter(tiny.SyntheticLoader()))
  views = tiny.views_fn(jax.random.PRNGKey(0), batch["image"])
  variables = model.init(jax.random.PRNGKey(1), views[0])
  tx = optax.sgd(0.1)
  st = state.create(variables, tx, jax.random.PRNGKey(2), ema=ema)
  obj = objectives.make_objective(
    {"name": "info_nce", "on": "emb", "temperature": 0.2}, mesh
  )
  fn = jax.jit(
    lambda s, b: step.train_step(
      s,
      b,
      model=model,
      tx=tx,
      objective=obj,
      views_fn=tiny.views_fn,
      ema_decay=(lambda _: jnp.float32(0.9)) if ema else None,
    )
  )
  return model, batch, st, fn


def test_update_is_sgd_on_the_reference_gradient():
  mesh = sharding.make_data_mesh(jax.devices()[:1])
  model, batch, st, fn = _setup(mesh)
  new, metrics = fn(st, sharding.put_local_batch(batch, mesh))
  # Reference: the same forward written out directly, views from
  # fold_in(rng, step 0).
  views = tiny.views_fn(jax.random.fold_in(st.rng, 0), batch["image"])

  def loss(params):
    z = []
    stats = st.batch_stats
    for v in views:
      out, upd = model.apply(
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


def test_same_result_on_one_and_eight_devices():
  results = []
  for n in (1, 8):
    mesh = sharding.make_data_mesh(jax.devices()[:n])
    _, batch, st, fn = _setup(mesh)
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


def test_ema_follows_the_new_parameters():
  mesh = sharding.make_data_mesh(jax.devices()[:1])
  _, batch, st, fn = _setup(mesh, ema=True)
  new, _ = fn(st, sharding.put_local_batch(batch, mesh))
  jax.tree.map(
    lambda e, e0, p: np.testing.assert_allclose(
      e, 0.9 * e0 + 0.1 * p, rtol=1e-6, atol=1e-7
    ),
    new.ema_params,
    st.ema_params,
    new.params,
  )
  assert optim.ema_update is not None


def test_objective_hooks_prepare_teacher_and_extras():
  """prepare adds a view, the EMA teacher sees the first view (batch
  statistics of its own, running stats untouched), extras are updated."""
  model = tiny.tiny_model()
  batch = next(iter(tiny.SyntheticLoader()))
  x0 = tiny.views_fn(jax.random.PRNGKey(0), batch["image"])[0]
  variables = model.init(jax.random.PRNGKey(1), x0)
  tx = optax.sgd(0.1)
  st = state.create(
    variables, tx, jax.random.PRNGKey(2), ema=True, extras={"n": jnp.int32(0)}
  )
  st = st.replace(ema_params=jax.tree.map(lambda p: p * 1.5, st.params))
  seen = {}

  def loss(outs, b, ctx):
    seen["views"] = len(outs)
    teacher_emb = ctx.teacher[0]["emb"]
    value = jnp.mean((outs[2]["emb"] - 2 * teacher_emb) ** 2)
    return value, {"teacher_emb": jnp.sum(teacher_emb), "n": ctx.extras["n"]}

  obj = objectives.Objective(
    loss,
    teacher_views=1,
    prepare=lambda rng, views, b: ((*views, views[0] * 2.0), b),
    update_extras=lambda ex, outs, teacher, b: {"n": ex["n"] + 1},
  )
  fn = jax.jit(
    lambda s, b: step.train_step(
      s, b, model=model, tx=tx, objective=obj, views_fn=tiny.views_fn
    )
  )
  mesh = sharding.make_data_mesh(jax.devices()[:1])
  new, metrics = fn(st, sharding.put_local_batch(batch, mesh))
  assert seen["views"] == 3
  views = tiny.views_fn(jax.random.fold_in(st.rng, 0), batch["image"])
  want, _ = model.apply(
    {"params": st.ema_params, "batch_stats": st.batch_stats},
    views[0],
    train=True,
    mutable=["batch_stats"],
  )
  np.testing.assert_allclose(
    metrics["teacher_emb"], np.sum(want["emb"]), rtol=1e-5
  )
  assert int(metrics["n"]) == 0 and int(new.extras["n"]) == 1
  st_no_ema = state.create(variables, tx, jax.random.PRNGKey(2))
  with pytest.raises(ValueError, match="ema_decay"):
    fn(st_no_ema, sharding.put_local_batch(batch, mesh))
