"""MMT in the loop on resnet_tiny and synthetic target images: two
students and two mean teachers in the state, the classifiers restarting
from the centroids at each clustering (as the official re-initialisation),
the k-means miner on both teachers, both students from the source
weights, 8 devices == 1 device and an exact resume."""

import shutil
import tempfile

import jax
import ml_collections
import numpy as np
import pytest
from preempt import preempted_after
from sklearn.cluster import KMeans

from idlearn import encoders, errors, methods, pretrained, sharding
from idlearn.methods import mmt
from idlearn.training import inputs as inputs_lib
from idlearn.training import loop

H, W, B, K = 32, 16, 16, 4  # images, global batch, images per identity
N_IMAGES, N_PERSONS = 48, 6


class _Batches:
  """P x K batches of the pseudo identities; the state is the count."""

  def __init__(self, images, labels, seed):
    self.images, self.labels, self.seed, self.step = images, labels, seed, 0

  def __iter__(self):
    return self

  def __next__(self):
    rng = np.random.default_rng((self.seed, self.step))
    self.step += 1
    ids = rng.choice(np.unique(self.labels), B // K, replace=False)
    rows = np.concatenate([
      rng.choice(np.flatnonzero(self.labels == i), K) for i in ids
    ])  # fmt: skip
    y = self.labels[rows]
    return {
      "image": self.images[rows],
      "id": y,
      "label": y,
      "cam": np.zeros_like(y),
      "index": rows.astype(np.int32),
    }

  def get_state(self):
    return {"step": self.step}

  def set_state(self, state):
    self.step = int(state["step"])


class _Loader:
  def __init__(self, *args):
    self.args = args

  def __iter__(self):
    return _Batches(*self.args)


class SyntheticKMeans(mmt.TargetKMeansMiner):
  """The miner on synthetic "persons" (a colour each, plus noise)."""

  def images(self):
    rng = np.random.default_rng(0)
    person = np.arange(N_IMAGES) % N_PERSONS
    base = (person[:, None, None, None] * 41 % 200).astype(np.float32)
    noise = rng.integers(0, 56, size=(N_IMAGES, H, W, 3))
    return (base + noise).astype(np.uint8)

  def loader(self, state, step):
    labels = np.asarray(state["pseudo"])
    return _Loader(self.images(), labels, self.setup.seed + step)


@pytest.fixture
def synthetic(monkeypatch):
  monkeypatch.setitem(methods.MINERS, "target_kmeans", SyntheticKMeans)


def _config(total=4, every=3, waveblock="post_a", **model):
  c = ml_collections.ConfigDict()
  c.seed, c.total_steps, c.log_steps, c.ckpt_steps = 0, total, 1, 1
  c.input = dict(name="synthetic", global_batch_size=B, image_size=(H, W),
                 sampler="pk", k=K)  # fmt: skip
  c.views = dict(image=dict(size=(H, W), flip=0.5, count=2))
  attention = mmt.ARMS[waveblock][0]
  kw = {"after_stage": ("", attention, attention, "")} if attention else {}
  c.model = dict(encoder="resnet_tiny", encoder_kw=kw, **model)
  c.method = dict(name="mmt", waveblock=waveblock)
  c.miner = dict(name="target_kmeans", every_steps=every, num_clusters=4,
                 n_init=2)  # fmt: skip
  c.optim = dict(name="adamw", lr=1e-3, weight_decay=5e-4,
                 schedule="constant")  # fmt: skip
  return c


def _mesh(devices=1):
  return sharding.make_data_mesh(jax.devices()[:devices])


def _state(config):
  run = loop.build(config, _mesh(), evaluators=[])
  return run, loop.init_state(run, run.method.miner.sample())


def test_state_holds_two_students_two_teachers_and_the_anchors(synthetic):
  run, st = _state(_config())
  assert set(st.params) == set(st.ema_params) == {"net1", "net2"}
  assert set(st.batch_stats) == {"net1", "net2"}
  enc1, enc2 = (st.params[k]["encoder"] for k in ("net1", "net2"))
  assert "stage2_nonlocal" in enc1 and "stage3_nonlocal" in enc1
  # different initialisations
  assert not np.allclose(enc1["conv1"]["kernel"], enc2["conv1"]["kernel"])
  assert st.params["net1"]["classifier"].shape == (32, 4)  # [d, K]
  extras = st.extras["method"]
  assert set(extras) == {"anchor", "anchor_ema", "generation"}
  assert set(st.extras["miner"]) == {"pseudo", "centroids", "generation"}
  # retrieval: net1's backbone, without the training-only WaveBlock
  assert run.method.BACKBONE == ("net1",)
  assert run.encoder.module.encoder.after_stage == ("", "nonlocal",
                                                    "nonlocal", "")  # fmt: skip


def test_config_checks_name_the_field(synthetic):
  config = _config(waveblock="none")
  config.method.waveblock = "big"
  with pytest.raises(errors.ConfigError, match="waveblock='big'"):
    _state(config)
  config.method.waveblock = "pre_a"  # the encoder holds no CBAM
  with pytest.raises(errors.ConfigError, match="after_stage"):
    _state(config)
  config = _config()
  config.miner.num_clusters = 3  # < P = 4 identities per batch
  with pytest.raises(errors.ConfigError, match="num_clusters=3"):
    _state(config)


def test_refresh_runs_kmeans_on_the_mean_of_both_teachers(synthetic):
  run, _ = _state(_config())
  miner = run.method.miner
  rng = np.random.default_rng(1)
  feats = {k: rng.normal(size=(N_IMAGES, 8)) for k in ("net1", "net2")}
  calls = []

  def features(images, batch_size=64, use_ema=False, path=None):
    calls.append((use_ema, path))
    return {"eval": feats[path[0]] * 3.0, "emb": None}

  state = miner.init_state({"eval": 8, "emb": 8})
  new, info, message = miner.refresh(features, state)
  assert calls == [(True, ("net1",)), (True, ("net2",))]
  unit = {k: v / np.linalg.norm(v, axis=1, keepdims=True)
          for k, v in feats.items()}  # fmt: skip
  mean = (unit["net1"] + unit["net2"]) / 2
  km = KMeans(4, n_init=2, random_state=0).fit(mean)
  np.testing.assert_array_equal(new["pseudo"], km.labels_)
  c = km.cluster_centers_
  np.testing.assert_allclose(
    new["centroids"], c / np.linalg.norm(c, axis=1, keepdims=True), 1e-5
  )
  assert int(new["generation"]) == 1 and "4 clusters" in message
  assert info["pseudo/largest_cluster"] >= info["pseudo/smallest_cluster"]


def test_classifiers_restart_from_the_centroids_and_follow_the_ema(synthetic):
  """The effective classifier weights (W = C + P - A, teacher C + E - B)
  equal the official recursion: all four set to the centroids at each
  clustering, the teachers an EMA of the students' after it."""
  config = _config(total=4, every=2, waveblock="plain")
  run, st = _state(config)
  inputs = inputs_lib.Inputs(None, run.method.miner, run.mesh, run.encoder)
  teacher, decay = {}, run.method.ema_decay()
  for step in range(1, 5):
    st, batch, _ = inputs.next(st, step, lambda *a: None)
    centres = np.asarray(st.extras["miner"]["centroids"]).T
    if (step - 1) % 2 == 0:  # a new clustering: the official re-init
      teacher = {k: centres for k in mmt.NETS}
      anchor = {k: np.asarray(st.params[k]["classifier"]) for k in mmt.NETS}
    a = float(decay(np.int32(step - 1)))
    st, _ = run.step_fn(st, sharding.put_local_batch(batch, run.mesh))
    ex = st.extras["method"]
    for k in mmt.NETS:
      student = centres + np.asarray(st.params[k]["classifier"]) - anchor[k]
      teacher[k] = a * teacher[k] + (1 - a) * student  # official EMA
      np.testing.assert_allclose(ex["anchor"][k], anchor[k])
      ours = (
        centres
        + np.asarray(st.ema_params[k]["classifier"])
        - ex["anchor_ema"][k]
      )
      np.testing.assert_allclose(ours, teacher[k], rtol=1e-5, atol=1e-6)
    assert not np.allclose(student, centres)  # the classifier trains


def test_both_students_start_from_the_source_with_fresh_attention(
  synthetic, tmp_path
):
  """Source encoder folders of the plain resnet_tiny (no attention)."""
  model = encoders.get_encoder("resnet_tiny")
  src = {}
  for seed in (1, 2):
    v = model.init(jax.random.key(seed), np.zeros((1, H, W, 3)), train=False)
    pretrained.save(tmp_path / f"s{seed}", {"name": "resnet_tiny"}, v)
    src[seed] = v["params"]["layer4_0"]["conv1"]["kernel"]
  config = _config(init=str(tmp_path / "s1"))
  kernel = lambda st, k: st.params[k]["encoder"]["layer4_0"]["conv1"]["kernel"]
  _, st = _state(config)
  for k in mmt.NETS:  # both from model.init; the non-local blocks fresh
    np.testing.assert_array_equal(kernel(st, k), src[1])
    enc = st.params[k]["encoder"]
    np.testing.assert_array_equal(enc["stage2_nonlocal"]["W_1"]["scale"], 0)
  config.method.init2 = str(tmp_path / "s2")  # the second source model
  _, st = _state(config)
  np.testing.assert_array_equal(kernel(st, "net1"), src[1])
  np.testing.assert_array_equal(kernel(st, "net2"), src[2])


def _train(workdir, devices, total=4):
  config = _config(total=total)
  return loop.train(config, workdir, mesh=_mesh(devices), evaluators=[])


@pytest.mark.slow
def test_trains_on_1_and_8_devices_and_resumes_exactly(synthetic, tiny):
  workdirs = [tempfile.mkdtemp() for _ in range(3)]
  try:
    one, eight, resumed = workdirs
    _train(one, 1)
    out = _train(eight, 8)
    with preempted_after(2):  # between two clusterings (0 and 3)
      _train(resumed, 8)
    _train(resumed, 8)
    a, b, c = (tiny.read_losses(w) for w in workdirs)
    assert sorted(a) == sorted(b) == sorted(c) == [1, 2, 3, 4]
    # one step: 8 devices == 1 device; later steps drift by float rounding
    # through Adam (measured 1e-5 relative at step 4)
    np.testing.assert_allclose(b[1], a[1], rtol=1e-6)
    np.testing.assert_allclose([b[s] for s in a], [a[s] for s in a], rtol=1e-4)
    assert [b[s] for s in b] == [c[s] for s in b]  # bitwise resume
    for key in ("soft_ce", "soft_tri", "ce_1", "ce_2", "tri_1", "tri_2"):
      assert np.isfinite(out[f"train/{key}"]), key
  finally:
    for w in workdirs:
      shutil.rmtree(w)
