"""DomainMix pseudo labels in the loop: clustering with the current model,
two-domain batches, and an exact resume across re-clusterings."""

import importlib.util
import json
import os
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest

from idlearn import main
from idlearn.mining import pseudo_labels
from idlearn.training import eval as eval_lib
from idlearn.training import loop, relabel, sharding

_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _config(arg="smoke"):
  spec = importlib.util.spec_from_file_location(
    "configs.domainmix_pku_mars", _CONFIGS / "domainmix_pku_mars.py"
  )
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


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
  it = iter(relabel.TwoDomainLoader(_Loader(4, 10), _Loader(2, 0)))
  b = next(it)
  np.testing.assert_array_equal(b["domain"], [0, 0, 0, 0, 1, 1])
  np.testing.assert_array_equal(
    b["id"], [10, 11, 12, 13, relabel.TARGET_ID_OFFSET, 1 + 1_000_000]
  )
  np.testing.assert_array_equal(b["label"], [0, 1, 2, 3, 0, 1])
  state = it.get_state()
  want = next(it)
  it2 = iter(relabel.TwoDomainLoader(_Loader(4, 10), _Loader(2, 0)))
  it2.set_state(state)
  got = next(it2)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k])


def test_refresh_clusters_the_target_with_the_current_model(shared):
  shared("mars_mini")
  config = _config()
  mesh = sharding.make_data_mesh(jax.devices()[:1])
  parts = loop.build(config)
  rel = parts.miner
  from idlearn.training import objectives, optim

  tx, _ = optim.make_optimizer(config.optim, config.total_steps)
  obj = objectives.make_objective(config.loss, mesh)
  sample = np.zeros((1, *config.input.image_size, 3), np.uint8)
  st = loop._init_state(loop.fields.resolve(config, loop.FIELDS, "c"), parts,
                        tx, mesh, sample, obj)  # fmt: skip
  assert int(st.extras["num_clusters"]) == 0
  assert (np.asarray(st.extras["pseudo"]) == -1).all()
  new, info = rel.refresh(st, mesh)
  feats = eval_lib.extract(
    parts.model,
    {"params": st.params, "batch_stats": st.batch_stats},
    rel.images(),
    size=tuple(config.input.image_size),
    feature="feat",
    mesh=mesh,
  )
  want, want_info = pseudo_labels.domainmix_pseudo_labels(
    feats, k1=30, k2=6, eps=0.6, min_samples=4, min_cluster_size=5
  )
  got = np.asarray(new.extras["pseudo"])
  np.testing.assert_array_equal(got, want)
  c = int(new.extras["num_clusters"])
  assert c == want_info["num_clusters"] == info["pseudo/num_clusters"] > 0
  unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
  for j in range(c):
    m = unit[want == j].mean(0)
    np.testing.assert_allclose(
      new.extras["centroids"][j], m / np.linalg.norm(m), rtol=1e-4, atol=1e-5
    )
  np.testing.assert_array_equal(new.extras["centroids"][c:], 0.0)
  assert float(new.extras["indep_threshold"]) == pytest.approx(
    want_info["indep_threshold"]
  )
  # The next batches: P x K source ids, then P x K pseudo ids.
  b = next(iter(rel.loader(new.extras, 0)))
  half = config.input.global_batch_size // 2
  np.testing.assert_array_equal(b["domain"], np.repeat([0, 1], half))
  tgt = b["label"][half:]
  np.testing.assert_array_equal(tgt, got[b["index"][half:]])
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
    config.total_steps, config.pseudo_labels.every_steps = total, 2
    config.eval_at_start, config.evals = False, {}
    config.async_ckpt = False
    # total_steps differs between the runs: keep the learning rate off it.
    config.optim.schedule = "constant"
    return main.run(config, workdir)

  straight, resumed = tempfile.mkdtemp(), tempfile.mkdtemp()
  run(straight, 5)
  run(resumed, 3)  # stops mid-interval: labels from the step-2 clustering
  run(resumed, 5)  # re-clusters at step 4 again
  a, b = _losses(straight), _losses(resumed)
  assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5]
  for step in a:
    assert a[step] == b[step], (step, a[step], b[step])
