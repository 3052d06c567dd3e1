"""CaCL: the camera curriculum miner (warm-up, camera order, stages that
add one camera each, camera bias of the pseudo labels, state that resumes
exactly), its loaders, the objective vs a float64 NumPy reference on 1
and 8 devices, one train step on resnet_tiny, and a resumed run."""

import copy
import functools
import json
import os
import tempfile

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fake_setup import fake_setup
from preempt import preempted_after

from configs import cacl_pku_mars
from idlearn import encoders, fields, main, methods, sharding
from idlearn.methods import cacl, domainmix
from idlearn.mining import curriculum
from idlearn.training import inputs
from idlearn.training import state as state_lib
from idlearn.training import step as step_lib

RTOL = 1e-5


def _mesh(n=1):
  return sharding.make_data_mesh(jax.devices()[:n])


def _setup(mesh=None, encoder=None, **input_fields):
  inp = fields.resolve(
    {"name": "fake", "image_size": (1, 1), "global_batch_size": 16,
     "sampler": "pk", **input_fields},
    inputs.INPUT_FIELDS, "config.input",
  )  # fmt: skip
  return fake_setup(
    mesh=mesh or _mesh(),
    make_encoder=lambda: encoders.get_encoder(encoder) if encoder else None,
    input=inp,
  )


# --- the miner on a synthetic target: 4 cameras x 3 identities x 8 images;
# camera 2 is drawn like the source, the others shifted by 2, 4, 6 ---

SHIFT = {0: 2.0, 1: 4.0, 2: 0.0, 3: 6.0}


def _draw(rng, n_ids, shift, per_id=8):
  dirs = 1.0 + 0.5 * rng.normal(size=(n_ids, 12))  # identities near a mean
  z = np.repeat(dirs, per_id, 0) + 0.05 * rng.normal(size=(n_ids * per_id, 12))
  extra = np.zeros((len(z), 4))
  extra[:, 0] = shift
  return np.concatenate([z, extra], 1).astype(np.float32)


def _encode(n, flag):
  """uint8 [n, 1, 1, 3] images that carry their index (and a source flag)."""
  i = np.arange(n)
  return np.stack([i % 256, i // 256, np.full(n, flag)], -1).astype(np.uint8)[
    :, None, None, :
  ]


class _Synthetic:
  def __init__(self, seed=0):
    rng = np.random.default_rng(seed)
    self.cams = np.repeat(np.array([1, 3, 0, 2], np.int32), 24)
    self.target = np.concatenate(
      [_draw(rng, 3, SHIFT[c]) for c in (1, 3, 0, 2)]
    )
    self.source = _draw(rng, 6, 0.0)
    self.calls = []

  def miner(self, **cfg):
    cfg = {
      "name": "camera_curriculum", "data": "fake", "every_steps": 1,
      "source_steps": 2, "stage_steps": 2, "k1": 6, "k2": 2,
      "min_cluster_size": 5, **cfg,
    }  # fmt: skip
    miner = methods.make_miner(cfg, _setup())
    miner._loaded = {"image": _encode(len(self.target), 0), "cam": self.cams}
    miner._source = _encode(len(self.source), 1)
    return miner

  def features(self, images, batch_size=64, **kw):
    px = images[:, 0, 0].astype(int)
    idx = px[:, 0] + 256 * px[:, 1]
    src = px[:, 2] == 1
    self.calls.append((bool(src[0]), idx.copy()))
    f = np.where(src[:, None], self.source[idx % len(self.source)],
                 self.target[idx])  # fmt: skip
    return {"eval": f, "emb": f}


def _roundtrip(state):
  """As the loop keeps it: on device, checkpointed, back to the host."""
  return sharding.to_host(jax.device_put(copy.deepcopy(state)))


def test_stages_add_cameras_in_mmd_order_and_log_the_camera_bias():
  syn = _Synthetic()
  miner = syn.miner()
  st = miner.init_state({"eval": 16, "emb": 16})
  assert st["order"].tolist() == [-1] * 4 and int(st["stage"]) == -1
  seen = []
  for g in range(11):  # minings at steps 0..10 (every_steps 1)
    syn.calls.clear()
    st, report, message = miner.refresh(syn.features, st)
    assert int(st["generation"]) == g + 1
    stage = int(st["stage"])
    seen.append(stage)
    if g < 2:  # warm-up: no features, no labels
      assert stage == -1 and not syn.calls and "warm-up" in message
      assert (st["pseudo"] == -1).all() and st["order"][0] == -1
      continue
    if g == 2:  # the first stage orders the cameras, from the source too
      assert "camera order" in message and syn.calls[0][0] is False
      assert syn.calls[1][0] is True and len(syn.calls[1][1]) == 48
    np.testing.assert_array_equal(st["order"], [2, 0, 1, 3])
    chosen = [2, 0, 1, 3][: stage + 1]
    included = np.isin(syn.cams, chosen)
    if g > 2:  # later minings embed the included images only
      np.testing.assert_array_equal(syn.calls[0][1], np.flatnonzero(included))
    labels = st["pseudo"]
    assert (labels[~included] == -1).all()
    for c in chosen:  # every included camera's identities are clustered
      assert (labels[syn.cams == c] >= 0).any(), (g, c)
    c = int(st["num_clusters"])
    assert (
      c == len(np.unique(labels[labels >= 0])) == report["pseudo/num_clusters"]
    )
    bias, _ = curriculum.camera_bias(labels, syn.cams)
    assert report["pseudo/camera_bias"] == float(st["camera_bias"]) == bias
    assert report["curriculum/stage"] == stage
    assert report["curriculum/target_images"] == included.sum()
    assert f"cameras {chosen}" in message
  assert seen == [-1, -1, 0, 0, 1, 1, 2, 2, 3, 3, 3]


def test_miner_state_alone_resumes_the_curriculum_exactly():
  syn = _Synthetic(seed=1)
  straight = syn.miner()
  st = straight.init_state({"eval": 16, "emb": 16})
  states = []
  for _ in range(7):
    st, _, _ = straight.refresh(syn.features, st)
    states.append(st)
  # a new process: a fresh miner from the checkpointed state after step 3
  resumed = syn.miner()
  st = _roundtrip(states[3])
  for want in states[4:]:
    st, _, _ = resumed.refresh(syn.features, st)
    chex.assert_trees_all_equal(st, want)
  # a stage keeps its first clustering's threshold; a new stage resets it
  assert states[3]["indep_threshold"] == states[2]["indep_threshold"]


def test_camera_bias_on_a_hand_case():
  labels = np.array([0, 0, 1, 1, 1, 2, 2, -1, -1])
  cams = np.array([0, 0, 0, 1, 1, 2, 2, 5, 3])
  # cluster 0: camera 0 only; 1: cameras 0 and 1; 2: camera 2 only
  assert curriculum.camera_bias(labels, cams) == (2 / 3, 3)
  assert curriculum.camera_bias(np.full(4, -1), np.arange(4)) == (0.0, 0)
  assert curriculum.camera_bias(np.zeros(3, int), np.arange(3)) == (0.0, 1)


def test_bad_miner_and_method_configs_name_the_field():
  syn = _Synthetic()
  with pytest.raises(ValueError, match="stage_steps=3: expected a multiple"):
    syn.miner(every_steps=2, source_steps=2, stage_steps=3)
  with pytest.raises(ValueError, match="source_steps=-2"):
    syn.miner(source_steps=-2)
  with pytest.raises(ValueError, match="mmd_scales"):
    syn.miner(mmd_scales=(1.0, -1.0))
  miner = _FakeMiner()
  for bad in ({"cd_weight": -1.0}, {"cd_temperature": 0.0},
              {"memory_momentum": 1.0}):  # fmt: skip
    with pytest.raises(ValueError, match=next(iter(bad))):
      methods.make_method({"name": "cacl", **bad}, _setup(), miner)
  with pytest.raises(ValueError, match="needs config.miner"):
    methods.make_method({"name": "cacl"}, _setup())


# --- the loaders, on the bundled PKU-Reid as both domains (2 cameras) ---


def test_loaders_warm_up_then_two_domains_with_few_pseudo_ids(data_dir, built):
  built("pku_reid")
  setup = _setup(name="pku_reid", image_size=(32, 16), data_dir=data_dir)
  cfg = {"name": "camera_curriculum", "data": "pku_reid",
         "data_dir": data_dir, "every_steps": 1, "source_steps": 1,
         "stage_steps": 1}  # fmt: skip
  miner = methods.make_miner(cfg, setup)
  st = miner.init_state({"eval": 8, "emb": 8})
  b = next(iter(miner.loader(st, 0)))  # warm-up: source rows only
  assert b["image"].shape == (16, 32, 16, 3)
  np.testing.assert_array_equal(b["domain"], np.zeros(16))
  assert set(b) == {*domainmix.TwoDomainLoader.KEYS, "domain"}
  # stage 0 with one pseudo identity on camera 0: it fills both target
  # identity slots of the batch (P = 2)
  cams = miner.cams()
  pseudo = np.full(len(cams), -1, np.int32)
  pseudo[np.flatnonzero(cams == 0)[:6]] = 0
  st.update(pseudo=pseudo, num_clusters=np.int32(1), stage=np.int32(0))
  it = iter(miner.loader(st, 3))
  b = next(it)
  np.testing.assert_array_equal(b["domain"], np.repeat([0, 1], 8))
  np.testing.assert_array_equal(b["label"][8:], 0)
  np.testing.assert_array_equal(pseudo[b["index"][8:]], 0)
  assert (b["id"][8:] == domainmix.TARGET_ID_OFFSET).all()
  # the iterator resumes from its state
  state = it.get_state()
  want = next(it)
  again = iter(miner.loader(st, 3))
  again.set_state(state)
  got = next(again)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k])
  # no cluster at a stage: source rows only until the next mining
  st.update(pseudo=np.full(len(cams), -1, np.int32), num_clusters=np.int32(0))
  assert (next(iter(miner.loader(st, 4)))["domain"] == 0).all()


# --- the objective ---


class _FakeMiner:
  NAME = "camera_curriculum"

  def max_clusters(self):
    return 6


class FakeNet:
  def __call__(self, x):
    return x


def _np_unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _np_cd(feat, ids, cams, t):
  """The camera-diversity formula, anchor by anchor."""
  z = _np_unit(feat)
  per = []
  for i in range(len(ids)):
    pos = [
      j for j in range(len(ids))
      if j != i and ids[i] >= 0 and ids[j] == ids[i] and cams[j] != cams[i]
    ]  # fmt: skip
    if not pos:
      continue
    s = z[i] @ z.T / t
    others = np.delete(s, i)
    lse = np.log(np.exp(others - others.max()).sum()) + others.max()
    per.append(-np.mean([s[j] - lse for j in pos]))
  return np.mean(per) if per else 0.0


def _np_cacl(out, batch, mined, cd_weight):
  dom, label, ids = batch["domain"], batch["label"], batch["id"]
  src, tgt = dom == 0, dom == 1
  c, eps = out["logits"].shape[1], 0.1
  target = np.full((len(label), c), eps / c)
  target[np.arange(len(label)), np.where(src, label, 0)] += 1 - eps
  ce_src = -(target * _np_log_softmax(out["logits"])).sum(1)[src].mean()
  cos = _np_unit(out["feat"]) @ _np_unit(mined["centroids"]).T / 0.05
  cos[:, mined["num_clusters"] :] = -1e9
  ce_tgt = -_np_log_softmax(cos)[np.arange(len(label)), label][tgt].mean()
  emb = out["emb"]
  d = np.sqrt(((emb[:, None] - emb[None]) ** 2).sum(-1))
  same = ids[:, None] == ids[None]
  hinge = []
  for i in range(len(ids)):
    pos = same[i] & (np.arange(len(ids)) != i)
    hinge.append(max(d[i][pos].max() - d[i][~same[i]].min() + 0.3, 0))
  tri = np.mean(hinge)
  cd = _np_cd(out["feat"], np.where(tgt, label, -1), batch["cam"], 0.1)
  terms = dict(ce_src=ce_src, ce_tgt=ce_tgt, triplet=tri, cd=cd)
  return ce_src + ce_tgt + tri + cd_weight * cd, terms


def _inputs(seed=3, n=16, d=6):
  rng = np.random.default_rng(seed)
  out = {
    "emb": rng.normal(size=(n, d)),
    "feat": rng.normal(size=(n, d)),
    "logits": rng.normal(size=(n, 5)),
  }
  domain = np.repeat([0, 1], n // 2).astype(np.int32)
  label = np.concatenate([np.repeat([0, 3], 4), np.repeat([1, 2], 4)])
  ids = np.where(domain == 1, label + domainmix.TARGET_ID_OFFSET, label)
  # target ids 1 and 2 each span two cameras (cross-camera positives)
  cam = np.array([0, 1] * 4 + [2, 2, 3, 3, 4, 4, 4, 5], np.int32)
  batch = {"domain": domain, "label": label.astype(np.int32),
           "id": ids.astype(np.int32), "cam": cam}  # fmt: skip
  mined = {
    "centroids": rng.normal(size=(6, d)).astype(np.float32),
    "num_clusters": np.int32(3),
    "generation": np.int32(1),
    "stage": np.int32(0),
  }
  return out, batch, mined


@pytest.mark.parametrize("cd_weight", [1.0, 0.0])
def test_loss_matches_the_formula_on_1_and_8_devices(cd_weight):
  out, batch, mined = _inputs()
  extras = {"centroids": jnp.zeros((6, 6)), "generation": jnp.int32(0)}
  results = []
  for n in (1, 8):
    mesh = _mesh(n)
    method = methods.make_method(
      {"name": "cacl", "cd_weight": cd_weight}, _setup(mesh), _FakeMiner()
    )
    put = functools.partial(
      jax.device_put, device=sharding.batch_sharding(mesh)
    )
    b = put(batch)

    def f(feat, method=method, b=b):
      o = {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}
      o["feat"] = feat
      ctx = methods.Context(
        extras=extras, mined=jax.tree.map(jnp.asarray, mined),
        step=jnp.int32(0), rng=jax.random.key(0),
      )  # fmt: skip
      loss, aux, _ = method.loss(FakeNet(), {"image": [o]}, b, ctx)
      return loss, aux

    feat = put(jnp.asarray(out["feat"], jnp.float32))
    results.append(jax.jit(jax.value_and_grad(f, has_aux=True))(feat))
  chex.assert_trees_all_close(results[0], results[1], rtol=RTOL, atol=1e-7)
  (loss, aux), _ = results[0]
  want, terms = _np_cacl(out, batch, mined, cd_weight)
  np.testing.assert_allclose(loss, want, rtol=RTOL)
  for k, v in terms.items():
    np.testing.assert_allclose(aux[k], v, rtol=RTOL, err_msg=k)
  assert terms["cd"] > 0 and float(aux["cd_anchors"]) == 8 / 16


def test_one_train_step_on_resnet_tiny():
  method = methods.make_method(
    {"name": "cacl"}, _setup(encoder="resnet_tiny"), _FakeMiner()
  )
  net = method.network()
  x = np.random.default_rng(0).integers(0, 255, (16, 32, 16, 3), np.uint8)
  variables = net.init(jax.random.key(1), jnp.asarray(x, jnp.float32))
  out = jax.eval_shape(
    lambda v: net.apply(v, jnp.zeros((1, 32, 16, 3))), variables
  )
  _, batch, mined = _inputs()
  d = out["eval"].shape[-1]
  mined["centroids"] = np.random.default_rng(1).normal(size=(6, d))
  mined["centroids"] = mined["centroids"].astype(np.float32)
  extras = {"method": method.init_extras(out), "miner": mined}
  tx = optax.adam(1e-2)
  st = state_lib.create(variables, tx, jax.random.key(2), extras=extras)
  fn = jax.jit(
    functools.partial(
      step_lib.train_step,
      method=method,
      network=net,
      tx=tx,
      views_fn=lambda rng, im: {"image": (im.astype(jnp.float32) / 255,)},
    )
  )
  new, metrics = fn(st, {**batch, "image": x})
  for key in ("loss", "ce_src", "ce_tgt", "triplet", "cd"):
    assert np.isfinite(float(metrics[key])), key
  assert float(metrics["cd"]) > 0 and float(metrics["stage"]) == 0
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                       new.params, st.params)  # fmt: skip
  assert max(jax.tree.leaves(moved["encoder"])) > 0
  assert int(new.extras["method"]["generation"]) == 1  # took the clustering


# --- a resumed run repeats the straight run (miner state checkpointed) ---


def _losses(workdir):
  out = {}
  for line in open(os.path.join(workdir, "metrics.jsonl")):
    rec = json.loads(line)
    if "train/loss" in rec:
      out[rec["step"]] = rec["train/loss"]
  return out


@pytest.mark.slow
def test_resume_mid_stage_repeats_the_same_losses(shared):
  shared("mars_mini")

  def run(workdir, total):
    config = cacl_pku_mars.get_config("smoke")
    config.total_steps = total
    config.miner.update(every_steps=2, source_steps=2, stage_steps=2)
    config.eval_at_start, config.evals = False, {}
    config.async_ckpt = False
    return main.run(config, workdir)

  straight, resumed = tempfile.mkdtemp(), tempfile.mkdtemp()
  run(straight, 6)
  with preempted_after(3):  # mid-interval in stage 0 (order known)
    run(resumed, 6)
  run(resumed, 6)  # the restored loader, then stage 1 at step 4
  a, b = _losses(straight), _losses(resumed)
  assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
  for step in a:
    assert a[step] == b[step], (step, a[step], b[step])
  stages = {}
  for line in open(os.path.join(straight, "metrics.jsonl")):
    rec = json.loads(line)
    if "curriculum/stage" in rec:
      stages[rec["step"]] = rec["curriculum/stage"]
  assert stages == {0: -1, 2: 0, 4: 1}


def test_registered():
  assert methods.METHODS["cacl"] is cacl.CaCL
  assert methods.MINERS["camera_curriculum"] is cacl.CameraCurriculumMiner
