"""The secla method: config checks, SECLA-B's matching, the network and its
naming hook, the caption-group miner's stages, and one train step of each
stage on 1 and 8 devices."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fake_setup import fake_setup

from idlearn import methods, sharding
from idlearn.data import secla_groups as sg
from idlearn.encoders.backbone import select_params
from idlearn.methods import secla
from idlearn.training import state, step

LABELS = np.repeat(np.arange(28), 10).astype(np.int32)
GROUPS = dict(groups=120, test_groups=20, max_faces=3, distractors=1,
              drop_name=0.1)  # fmt: skip
SMALL = dict(name_dim=8, proj_hidden=16, proj_dim=8)


def _method(tiny, cfg=None, miner=None, devices=1, total=10):
  setup = fake_setup(
    mesh=sharding.make_data_mesh(jax.devices()[:devices]),
    make_encoder=tiny.tiny_encoder,
    input={"name": "att_faces", "split": "train", "image_size": (8, 8),
           "global_batch_size": 8, "data_dir": "", "manual_dir": ""},
    total_steps=total,
    num_classes=lambda: 28,
  )  # fmt: skip
  miner_cfg = {"name": "caption_groups", "every_steps": 5, **GROUPS}
  m = methods.make_miner({**miner_cfg, **(miner or {})}, setup)
  return methods.make_method(
    {"name": "secla", **SMALL, **(cfg or {})}, setup, m
  )


@functools.cache
def _data():
  """What the miner loads, on synthetic 8x8 images (no data set read)."""
  train, test = sg.build(LABELS, GROUPS)
  rng = np.random.default_rng(0)
  return {
    "images": rng.integers(0, 256, (len(LABELS), 8, 8, 3), dtype=np.uint8),
    "train": train,
    "test": test,
    "easy": train.subset(sg.easy(train)),
    "easy_rows": sg.easy_faces(train, 28),
  }


def test_bad_configs_name_the_field(tiny):
  with pytest.raises(ValueError, match="directions='one'"):
    _method(tiny, {"directions": "one"})
  with pytest.raises(ValueError, match="alpha=-1"):
    _method(tiny, {"alpha": -1.0})
  with pytest.raises(ValueError, match="bootstrap=True needs config.miner"):
    _method(tiny, {"bootstrap": True})
  with pytest.raises(ValueError, match="bootstrap=False needs"):
    _method(tiny, miner={"easy_steps": 5})
  with pytest.raises(ValueError, match="easy_steps = 3"):
    _method(tiny, {"bootstrap": True}, {"easy_steps": 3})
  with pytest.raises(ValueError, match="easy_steps = 10"):
    _method(tiny, {"bootstrap": True}, {"easy_steps": 10})
  with pytest.raises(ValueError, match="config.miner.max_faces = 0"):
    _method(tiny, miner={"max_faces": 0})


def test_match_known_names_follows_the_official_rule():
  # group 0: 3 faces; slots NONAME, a, b, c (c unknown: no easy face)
  sims = np.array(
    [
      [
        [0.0, 2.0, 1.0, 0.0],  # face 0 -> a (2.0)
        [0.0, 3.0, 0.0, 0.0],  # face 1 -> a (3.0): a's best
        [0.0, -1.0, -2.0, 5.0],  # face 2 -> c: unknown, unmatched
      ],
      [
        [1.0, 0.5, 0.0, 0.0],  # group 1: its face is aligned to NONAME
        [0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
      ],
      [
        [0.0, 4.0, 0.0, 0.0],  # group 2: easy (one face, one name)
        [0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
      ],
    ],
    np.float32,
  )
  fm = np.array([[1, 1, 1], [1, 0, 0], [1, 0, 0]], bool)
  nm = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]], bool)
  known = np.array([[0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 0, 0]], bool)
  got = jax.jit(secla.match_known_names)(sims, fm, nm, known)
  np.testing.assert_array_equal(
    got, [[-1, 1, -1, -1], [-1, -1, -1, -1], [-1, -1, -1, -1]]
  )
  slots = secla.aligned_slots(jnp.asarray(sims), jnp.asarray(nm))
  np.testing.assert_array_equal(slots[:, 0], [1, 0, 1])


def test_network_parts_and_naming_hook(tiny):
  method = _method(tiny)
  net = method.network()
  x = jnp.zeros((6, 8, 8, 3))
  v = jax.jit(net.init)(jax.random.key(0), x)
  ids = jnp.asarray([[0, 3, 5], [0, 1, 2]])
  out = jax.jit(net.apply)(v, x, names=ids)
  assert out["face"].shape == (6, 8) and out["name"].shape == (2, 3, 8)
  np.testing.assert_array_equal(out["eval"], out["emb"])
  p = v["params"]
  assert set(p) == {"encoder", "face_projector", "name_table",
                    "name_projector"}  # fmt: skip
  assert p["name_table"]["embedding"].shape == (29, 8)  # + NONAME
  assert set(select_params(p, "none")) == {"encoder"}
  faces, names = method.naming_embeddings(p, np.asarray(out["emb"]))
  np.testing.assert_allclose(faces, out["face"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(names[[3, 5]], out["name"][0, 1:], rtol=1e-5)
  assert names.shape == (29, 8)


def test_miner_stages_and_refresh(tiny):
  method = _method(tiny, {"bootstrap": True}, {"easy_steps": 5})
  miner = method.miner
  miner._data = _data()
  st = miner.init_state({"emb": 16, "eval": 16})
  st, info, message = miner.refresh(None, st)
  assert info == {"groups/stage": 1.0} and "'easy' from step 0" in message
  b = next(iter(miner.loader(st, 0)))
  assert b["face_mask"].shape == (8, 1) and b["names"].shape == (8, 2)
  assert b["image"].shape == (8, 8, 8, 3) and "extra_mask" not in b
  st, info, _ = miner.refresh(None, st)
  assert info == {"groups/stage": 2.0} and int(st["draws"]) == 2
  b = next(iter(miner.loader(st, 5)))
  assert b["face_mask"].shape == (8, 3) and b["extra_mask"].shape == (8, 5)
  assert b["image"].shape == (8 * (3 + 4), 8, 8, 3)
  assert miner.sample().shape == (1, 8, 8, 3)


def _one_step(tiny, batch, devices, bootstrap):
  method = _method(
    tiny, {"bootstrap": bootstrap}, {"easy_steps": 5 if bootstrap else 0},
    devices=devices,
  )  # fmt: skip
  mesh = method.setup.mesh
  net = method.network()
  variables = net.init(jax.random.key(1), jnp.zeros((1, 8, 8, 3)))
  # plain SGD: Adam would blow the float noise of the BatchNorm-cancelled
  # conv bias gradients up to +-lr, and 1 != 8 devices there
  tx = optax.sgd(0.1)
  st = state.create(variables, tx, jax.random.key(2), extras={"method": {}})
  st = jax.device_put(st, sharding.replicated(mesh))
  fn = jax.jit(
    functools.partial(
      step.train_step,
      method=method,
      network=net,
      tx=tx,
      views_fn=lambda rng, x: {"image": (x.astype(jnp.float32) / 255,)},
    )
  )
  batch = jax.device_put(batch, sharding.batch_sharding(mesh))
  new, metrics = fn(st, batch)
  return jax.device_get((new.params, metrics)), st.params


@pytest.mark.parametrize("stage", ["all", "bootstrap"])
def test_one_step_on_1_and_8_devices(tiny, stage):
  d = _data()
  loader = sg.GroupLoader(
    d["images"], d["train"], global_batch=8, seed=1,
    easy_rows=d["easy_rows"], extras=stage == "bootstrap",
  )  # fmt: skip
  batch = next(iter(loader))
  (p1, m1), start = _one_step(tiny, batch, 1, stage == "bootstrap")
  (p8, m8), _ = _one_step(tiny, batch, 8, stage == "bootstrap")
  chex.assert_trees_all_close(m8, m1, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(p8, p1, rtol=1e-4, atol=1e-5)
  assert np.isfinite(m1["loss"]) and 0 <= m1["naming_acc"] <= 1
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), p1,
                       jax.device_get(start))  # fmt: skip
  for part in ("encoder", "face_projector", "name_table", "name_projector"):
    assert max(jax.tree.leaves(moved[part])) > 0, part
  if stage == "bootstrap":
    for key in ("combined", "face", "matched_frac", "match_acc"):
      assert key in m1, key
    assert m1["matched_frac"] > 0
