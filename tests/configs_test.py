"""Every experiment config runs its smoke variant: 2 steps, then a resume;
every registered method has a config."""

import importlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from preempt import preempted_after

import idlearn
from configs import common
from idlearn import main, methods
from idlearn.training import loop

_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NAMES = sorted(
  p.stem
  for p in _CONFIGS.glob("*.py")
  if p.stem != "common" and not p.stem.startswith("_")
)


def _load(name):
  return importlib.import_module(f"configs.{name}")


def test_every_registered_method_has_a_config():
  used = {_load(name).get_config().method.name for name in NAMES}
  assert set(methods.METHODS) <= used, set(methods.METHODS) - used


def _needs_shared_data(config) -> None:
  """Skips (saying why) when a config reads ../shared/data that is absent."""
  for value in json.dumps(config.to_dict(), default=str).split('"'):
    if value.startswith(os.path.abspath(common.SHARED_DATA)):
      if not os.path.isdir(value):
        pytest.skip(f"{value} is absent (real data kept outside the repo)")


# idlearn.load is checked against the evaluator on one run of each kind of
# retrieval feature: a BNNeck, a margin head's embedding, a projection
# head's input, a DINO student's backbone, an MMT mean teacher (the first
# of two networks, with non-local layers between its stages), LDE's
# decoupled neck.
EMBED_CHECKED = (
  "supervised_pku_reid",
  "arcface_att_faces",
  "simclr_pku_reid",
  "dino_mars",
  "awb_pku_mars",
  "lde_pku_market_mars",
)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_smoke_runs_two_steps_then_resumes(name):
  config = _load(name).get_config("smoke")
  _needs_shared_data(config)
  full = _load(name).get_config()
  # The smoke variant changes sizes, not the structure of the experiment.
  assert set(config.to_dict()) == set(full.to_dict())
  assert config.method.name == full.method.name
  # A 3-step run preempted after step 2, then the same config resumed.
  config.total_steps = 3
  config.lock()
  workdir = tempfile.mkdtemp()
  with preempted_after(2):
    first = main.run(config, workdir)
  assert first["preempted_at"] == 2 and "train/loss" in first
  assert "2" in os.listdir(Path(workdir, "checkpoints"))
  results = main.run(config, workdir)
  steps = [
    rec["step"]
    for rec in map(json.loads, open(Path(workdir, "metrics.jsonl")))
    if "train/loss" in rec
  ]
  assert steps.count(3) >= 1 and steps.count(1) == 1  # resumed at 2, not 0
  evals = [k for k in results if k.startswith("eval/")]
  assert "train/loss" in results and evals, sorted(results)
  if name in EMBED_CHECKED:
    _embedder_equals_the_evaluators_features(config, workdir)


def _embedder_equals_the_evaluators_features(config, workdir):
  """idlearn.load(workdir) embeds the first evaluator's images exactly as
  that evaluator does (unit features, <= 1e-5), from the latest training
  checkpoint and from the final encoder folder."""
  run, state, _ = loop.restore(config, workdir)
  ev = run.evaluators[0]
  data = ev.data()
  images = data[1] if ev.cfg["type"] == "verification" else data[0]["image"]
  images = images[:24]
  want = ev.features(state, images)
  want = want / np.linalg.norm(want, axis=1, keepdims=True)
  for which in ("latest", "final"):
    got = idlearn.load(workdir, checkpoint=which).embed(images)
    np.testing.assert_allclose(got, want, atol=1e-5, err_msg=which)


def test_domainmix_source_only_baseline_drops_the_target():
  full = _load("domainmix_pku_mars").get_config()
  base = _load("domainmix_pku_mars").get_config("target=False")
  assert full.miner.name == "target_clusters" and full.miner.data == "mars"
  assert base.miner is None and base.method.name == "supervised"
  assert base.evals.to_dict() == full.evals.to_dict()  # same test sets
  assert base.total_steps == full.total_steps


def test_cacl_arms_differ_only_in_cd_weight_at_domainmix_budget():
  full = _load("cacl_pku_mars").get_config().to_dict()
  no_cd = _load("cacl_pku_mars").get_config("cd=0").to_dict()
  assert full["method"]["cd_weight"] > 0 == no_cd["method"]["cd_weight"]
  no_cd["method"]["cd_weight"] = full["method"]["cd_weight"]
  assert no_cd == full
  dm = _load("domainmix_pku_mars").get_config().to_dict()
  # the same test sets; CaCL's target set also after every clustering
  assert full["evals"]["mars"].pop("log_steps") == full["miner"]["every_steps"]
  for key in ("total_steps", "input", "views", "model", "optim", "evals"):
    assert full[key] == dm[key], key
  m = full["miner"]
  assert m["name"] == "camera_curriculum" and m["data"] == "mars"
  assert m["source_steps"] % m["every_steps"] == 0
  assert m["stage_steps"] % m["every_steps"] == 0


def test_awb_arms_differ_only_in_the_waveblock_at_domainmix_budget():
  attention = {"pre_a": "cbam", "post_a": "nonlocal"}
  arms = {}
  for arm in ("none", "plain", "pre_a", "post_a"):
    c = _load("awb_pku_mars").get_config(f"waveblock={arm}").to_dict()
    assert c["method"].pop("waveblock") == arm
    after = c["model"]["encoder_kw"].pop("after_stage", ())
    a = attention.get(arm)
    assert tuple(after) == (("", a, a, "") if a else ())
    arms[arm] = c
  assert all(c == arms["none"] for c in arms.values())
  dm = _load("domainmix_pku_mars").get_config().to_dict()
  full = arms["none"]
  assert full["total_steps"] == dm["total_steps"]
  assert full["model"] == dm["model"] | {"init": full["model"]["init"]}
  for key in ("image_size", "global_batch_size", "k"):
    assert full["input"][key] == dm["input"][key], key
  # seed s: net1 from source model s, net2 from source model s ^ 1
  s0, s1 = (_load("awb_pku_mars").get_config(f"seed={s}") for s in (0, 1))
  assert s0.model.init == s1.method.init2 != s1.model.init == s0.method.init2


def test_snp_arms_differ_only_in_the_selection():
  arms = {a: _load("snp_mars").get_config(f"select={a}") for a in
          ("snp", "random", "all")}  # fmt: skip
  snp, rand, every = (arms[a].to_dict() for a in ("snp", "random", "all"))
  assert snp["select"]["ids"] == rand["select"]["ids"] > 0
  assert every["select"]["ids"] == 0  # the whole pool
  for arm in (rand, every):
    assert {k: v for k, v in arm.items() if k != "select"} == {
      k: v for k, v in snp.items() if k != "select"
    }
  with pytest.raises(ValueError, match="select='best'"):
    _load("snp_mars").get_config("select=best")


def test_lde_arms_share_the_union_pool_and_budget():
  lde = _load("lde_pku_market_mars").get_config().to_dict()
  union = _load("lde_pku_market_mars").get_config("method=supervised")
  snp_all = _load("snp_mars").get_config("select=all").to_dict()
  assert lde["method"]["name"] == "lde"
  assert union.method.to_dict() == snp_all["method"]
  for key in ("total_steps", "select", "model", "optim", "evals", "views"):
    assert lde[key] == snp_all[key] == union.to_dict()[key], key
  assert lde["input"] == union.to_dict()["input"]
  assert lde["input"].pop("domain_pattern")
  assert lde["input"] == snp_all["input"]


@pytest.mark.parametrize("pretrain", ["dcl", "isr"])
def test_finetune_stage_one_trains_the_encoder_stage_two_loads(pretrain):
  pre = _load("finetune_pku_reid").get_config(
    f"stage=pretrain,pretrain={pretrain}"
  )
  fine = _load("finetune_pku_reid").get_config("init=/some/run/encoder/final")
  assert pre.method.name == pretrain and fine.method.name == "supervised"
  pre_model, fine_model = pre.model.to_dict(), fine.model.to_dict()
  assert fine_model.pop("init") == "/some/run/encoder/final"
  assert pre_model.pop("init") == ""
  assert pre_model == fine_model  # init= fits the stage-2 encoder
  assert tuple(pre.input.image_size) == tuple(fine.input.image_size)
  assert pre.total_steps == fine.total_steps  # the same budget per stage
  with pytest.raises(ValueError, match="pretrain='cion'"):
    _load("finetune_pku_reid").get_config("stage=pretrain,pretrain=cion")


def test_decoupled_mixup_faces_arms_share_the_face_recipe():
  recipe = _load("facenet_att_faces").get_config("loss=triplet_ce").to_dict()
  del recipe["method"]
  arms = {
    arm: _load("decoupled_mixup_att_faces").get_config(arm).to_dict()
    for arm in ("alpha=0", "eta=0", "")
  }
  assert arms["alpha=0"]["method"]["alpha"] == 0  # no mixed view
  assert arms["eta=0"]["method"]["eta"] == 0 < arms[""]["method"]["eta"]
  for c in arms.values():
    method = c.pop("method")
    assert method["name"] == "decoupled_mixup" and method["neck"] == "bnneck"
    assert c == recipe  # data, model, budget, evaluation: the face recipe
