"""DomainMix pseudo labels in the loop: clustering with the current model,
two-domain batches, and an exact resume across re-clusterings."""

import json
import os
import tempfile

import jax
import numpy as np
import pytest
from preempt import preempted_after

from configs import domainmix_pku_mars
from idlearn import augment, main, sharding
from idlearn.methods import domainmix
from idlearn.mining import pseudo_labels
from idlearn.training import loop


def _config(arg="smoke"):
  return domainmix_pku_mars.get_config(arg)


class _Iter:
  def __init__(self, rows, first_id):
    self.rows, self.first_id, self.step = rows, first_id, 0

  def __next__(self):
    ids = self.first_id + np.arange(self.rows, dtype=np.int32) + self.step
    self.step += 1
    return {
      "image": np.full((self.rows, 2, 2, 3), self.first_id, np.uint8),
      "id": ids,
      "label": ids - self.first_id,
      "cam": np.zeros(self.rows, np.int32),
      "index": np.arange(self.rows, dtype=np.int32),
    }

  def get_state(self):
    return {"step": self.step}

  def set_state(self, state):
    self.step = state["step"]


class _Loader:
  def __init__(self, rows, first_id):
    self.args = (rows, first_id)

  def __iter__(self):
    return _Iter(*self.args)


def test_two_domain_batches_concatenate_and_resume():
  it = iter(domainmix.TwoDomainLoader(_Loader(4, 10), _Loader(2, 0)))
  b = next(it)
  np.testing.assert_array_equal(b["domain"], [0, 0, 0, 0, 1, 1])
  np.testing.assert_array_equal(
    b["id"], [10, 11, 12, 13, domainmix.TARGET_ID_OFFSET, 1 + 1_000_000]
  )
  np.testing.assert_array_equal(b["label"], [0, 1, 2, 3, 0, 1])
  state = it.get_state()
  want = next(it)
  it2 = iter(domainmix.TwoDomainLoader(_Loader(4, 10), _Loader(2, 0)))
  it2.set_state(state)
  got = next(it2)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k])


def test_refresh_clusters_the_target_with_the_current_model(shared):
  shared("mars_mini")
  config = _config()
  mesh = sharding.make_data_mesh(jax.devices()[:1])
  run = loop.build(config, mesh)
  miner = run.method.miner
  st = loop.init_state(run, miner.sample())
  mined = sharding.to_host(st.extras["miner"])
  assert int(mined["num_clusters"]) == 0 and int(mined["generation"]) == 0
  assert (mined["pseudo"] == -1).all()
  new, info, message = miner.refresh(
    lambda x, batch_size: run.encoder(st, x, batch_size=batch_size), mined
  )
  assert "identities" in message
  # Reference features: the whole network's BNNeck output ("feat").
  images = miner.images()
  variables = {"params": st.params, "batch_stats": st.batch_stats}
  feats = np.asarray(
    run.network.apply(
      variables, augment.preprocess(images, images.shape[1:3]), train=False
    )["feat"]
  )
  want, want_info = pseudo_labels.domainmix_pseudo_labels(
    feats, k1=30, k2=6, eps=0.6, min_samples=4, min_cluster_size=5
  )
  np.testing.assert_array_equal(new["pseudo"], want)
  c = int(new["num_clusters"])
  assert c == want_info["num_clusters"] == info["pseudo/num_clusters"] > 0
  assert int(new["generation"]) == 1
  unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
  for j in range(c):
    m = unit[want == j].mean(0)
    np.testing.assert_allclose(
      new["centroids"][j], m / np.linalg.norm(m), rtol=1e-4, atol=1e-5
    )
  np.testing.assert_array_equal(new["centroids"][c:], 0.0)
  assert float(new["indep_threshold"]) == pytest.approx(
    want_info["indep_threshold"]
  )
  # The next batches: P x K source ids, then P x K pseudo ids.
  b = next(iter(miner.loader(new, 0)))
  half = config.input.global_batch_size // 2
  np.testing.assert_array_equal(b["domain"], np.repeat([0, 1], half))
  tgt = b["label"][half:]
  np.testing.assert_array_equal(tgt, new["pseudo"][b["index"][half:]])
  assert (tgt >= 0).all()


def _losses(workdir):
  out = {}
  for line in open(os.path.join(workdir, "metrics.jsonl")):
    rec = json.loads(line)
    if "train/loss" in rec:
      out[rec["step"]] = rec["train/loss"]
  return out


@pytest.mark.slow
def test_resume_between_reclusterings_repeats_the_same_losses(shared):
  shared("mars_mini")

  def run(workdir, total):
    config = _config()
    config.total_steps, config.miner.every_steps = total, 2
    config.eval_at_start, config.evals = False, {}
    config.async_ckpt = False
    return main.run(config, workdir)

  straight, resumed = tempfile.mkdtemp(), tempfile.mkdtemp()
  run(straight, 5)
  with preempted_after(3):  # mid-interval: labels from the step-2 clustering
    run(resumed, 5)
  run(resumed, 5)  # re-clusters at step 4 again
  a, b = _losses(straight), _losses(resumed)
  assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5]
  for step in a:
    assert a[step] == b[step], (step, a[step], b[step])
