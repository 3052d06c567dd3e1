"""Our losses vs pytorch-metric-learning and lightly on identical inputs.

Peers run in float64 (torch CPU), ours in float32; values agree to 1e-5
relative, gradients to 1e-4. Every convention difference is named where it
is bridged.
"""

import functools
import os
import sys
import types

import jax
import numpy as np
import pytest
import torch
from peers import peer_module
from pytorch_metric_learning import distances, losses, miners, reducers

from idlearn.losses import contrastive, margin, metric

torch.set_num_threads(1)
N, D = 8, 6
IDS = np.array([0, 0, 0, 1, 1, 2, 2, 3, 4, 4], np.int32)  # id 3: no positive


def _lightly(module: str):
  """lightly.loss.<module> from its installed file.

  `import lightly.loss` pulls torchvision (absent); the loss files need only
  torch and lightly.utils.dist. NTXentLoss also imports the memory bank,
  whose module imports lightly.models.utils (torchvision) for a distributed
  helper that a memory bank of size 0 never calls: that one module is an
  empty stand-in.
  """
  import lightly

  root = os.path.dirname(lightly.__file__)
  for name, sub in (
    ("lightly.models", "models"),
    ("lightly.models.modules", "models/modules"),
  ):
    if name not in sys.modules:
      pkg = types.ModuleType(name)
      pkg.__path__ = [os.path.join(root, sub)]
      sys.modules[name] = pkg
  sys.modules.setdefault(
    "lightly.models.utils", types.ModuleType("lightly.models.utils")
  )
  return peer_module("lightly", f"loss/{module}.py")


def _torch_value_and_grads(loss_fn, *arrays):
  ts = [
    torch.tensor(np.asarray(a, np.float64), requires_grad=True) for a in arrays
  ]
  loss = loss_fn(*ts)
  loss.backward()
  return loss.item(), [t.grad.numpy() for t in ts]


@functools.cache
def _compiled(loss_fn, argnums):
  return jax.jit(jax.value_and_grad(loss_fn, argnums, has_aux=True))


def _ours_value_and_grads(loss_fn, *arrays, argnums=(0, 1)):
  (loss, aux), grads = _compiled(loss_fn, argnums)(*arrays)
  return float(loss), [np.asarray(g) for g in grads], aux


# Temperature traced: one compile serves every info_nce comparison.
_info_nce = lambda z1, z2, t: contrastive.info_nce(z1, z2, temperature=t)


def _assert_same(ours, peer):
  np.testing.assert_allclose(ours[0], peer[0], rtol=1e-5)
  for g, h in zip(ours[1], peer[1], strict=True):
    np.testing.assert_allclose(g, h, rtol=1e-4, atol=1e-6)


def _views():
  return np.random.default_rng(0).normal(size=(2, N, D)).astype(np.float32)


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_info_nce_vs_pml_ntxent(t):
  # PML: one batch of 2N rows, labels i for both views of sample i; each
  # anchor-positive pair's denominator holds the positive and all 2N-2
  # other-label rows (= our 2N-1 terms); mean over the 2N pairs (= mean of
  # our two directions).
  z1, z2 = _views()
  pml = losses.NTXentLoss(temperature=t)
  labels = torch.arange(N).repeat(2)
  peer = _torch_value_and_grads(
    lambda a, b: pml(torch.cat([a, b]), labels), z1, z2
  )
  ours = _ours_value_and_grads(_info_nce, z1, z2, t)
  _assert_same(ours, peer)


def test_info_nce_vs_lightly_ntxent():
  # lightly: CrossEntropy over [2N, 2N-1] logits, mean over 2N rows: same.
  z1, z2 = _views()
  peer_loss = _lightly("ntx_ent_loss").NTXentLoss(temperature=0.2)
  peer = _torch_value_and_grads(peer_loss, z1, z2)
  ours = _ours_value_and_grads(_info_nce, z1, z2, 0.2)
  _assert_same(ours, peer)


@pytest.mark.parametrize("weighted", [False, True])
def test_dcl_vs_lightly(weighted):
  # lightly: 0.5 * (loss(z1 -> z2) + loss(z2 -> z1)), each a mean over N
  # anchors: our mean of the two directions. DCLW: lightly's weights are
  # detached (out0.detach(), torch.tensor(...)), as ours (stop_gradient);
  # lightly uses the local batch size for N and the local softmax when
  # gather_distributed, ours the global batch (single process here: same).
  z1, z2 = _views()
  mod = _lightly("dcl_loss")
  if weighted:
    peer_loss = mod.DCLWLoss(temperature=0.1, sigma=0.5)
    ours_fn = functools.partial(contrastive.dclw, temperature=0.1, sigma=0.5)
  else:
    peer_loss = mod.DCLLoss(temperature=0.1)
    ours_fn = functools.partial(contrastive.dcl, temperature=0.1)
  with pytest.warns(UserWarning) if weighted else _nullcontext():
    peer = _torch_value_and_grads(peer_loss, z1, z2)
  _assert_same(_ours_value_and_grads(ours_fn, z1, z2), peer)


class _nullcontext:
  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False


def _lp(squared):
  # PML's LpDistance normalises embeddings by default; ours uses them as
  # given. power=2 is our squared=True.
  return distances.LpDistance(
    normalize_embeddings=False, p=2, power=2 if squared else 1
  )


@pytest.mark.parametrize("squared", [False, True])
def test_batch_hard_vs_pml(squared):
  # Loose clusters: some anchors already satisfy the margin, some do not.
  rng = np.random.default_rng(1)
  centres = rng.normal(size=(5, D))
  emb = (centres[IDS] + 0.6 * rng.normal(size=(len(IDS), D))).astype(np.float32)
  labels = torch.tensor(IDS, dtype=torch.long)
  mrg = 1.0 if squared else 0.2
  miner = miners.BatchHardMiner(distance=_lp(squared))

  def pml(reducer):
    loss = losses.TripletMarginLoss(
      margin=mrg, distance=_lp(squared), reducer=reducer
    )
    return lambda e: loss(e, labels, miner(e, labels))

  ours_fn = functools.partial(
    metric.triplet, margin=mrg, mining="batch_hard", squared=squared
  )
  ours = _ours_value_and_grads(ours_fn, emb, IDS, argnums=(0,))
  # MeanReducer: mean hinge over the anchors with a positive and a negative,
  # our batch_hard reduction.
  _assert_same(ours, _torch_value_and_grads(pml(reducers.MeanReducer()), emb))
  # PML's default AvgNonZeroReducer averages only the hinges > 0.
  default = _torch_value_and_grads(pml(reducers.AvgNonZeroReducer()), emb)
  assert 0 < ours[2]["frac_active"] < 1
  np.testing.assert_allclose(
    ours[0] / ours[2]["frac_active"], default[0], rtol=1e-5
  )


def test_semi_hard_vs_pml_triplet_margin_miner():
  # PML's "semihard" miner keeps *every* triplet with 0 < d_an - d_ap <=
  # margin; FaceNet (ours) keeps, per anchor-positive pair, the closest
  # negative farther than the positive, i.e. PML's largest hinge of that
  # pair. Pairs whose closest farther negative is beyond the margin have no
  # PML triplet and hinge 0 in ours.
  rng = np.random.default_rng(2)
  emb = rng.normal(size=(len(IDS), D)).astype(np.float32) * 0.4
  mrg = 0.3
  labels = torch.tensor(IDS, dtype=torch.long)
  e = torch.tensor(emb, dtype=torch.float64)
  miner = miners.TripletMarginMiner(
    margin=mrg, type_of_triplets="semihard", distance=_lp(False)
  )
  a, p, n = miner(e, labels)
  per_triplet = losses.TripletMarginLoss(
    margin=mrg, distance=_lp(False), reducer=reducers.DoNothingReducer()
  )(e, labels, (a, p, n))["loss"]["losses"]
  assert len(a) >= 5, len(a)
  peer = {}
  for i, j, v in zip(a.tolist(), p.tolist(), per_triplet.tolist(), strict=True):
    peer[i, j] = max(peer.get((i, j), 0.0), v)

  same = IDS[:, None] == IDS[None, :]
  eye = np.eye(len(IDS), dtype=bool)
  d = metric._distances(emb, emb, eye, squared=False)
  hinge, valid = metric._semi_hard(d, same & ~eye, ~same, mrg)
  hinge, d = np.asarray(hinge), np.asarray(d)
  for i, j in zip(*np.nonzero(np.asarray(valid)), strict=True):
    if (i, j) in peer:
      np.testing.assert_allclose(hinge[i, j], peer[i, j], rtol=1e-5)
    elif np.any(d[i, ~same[i]] > d[i, j]):  # FaceNet's fallback aside
      assert hinge[i, j] == 0.0


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_margin_losses_vs_pml(kind):
  c = 5
  rng = np.random.default_rng(3)
  emb = rng.normal(size=(N, D)).astype(np.float32)
  w = rng.normal(size=(c, D)).astype(np.float32)
  ids = rng.integers(0, c, N).astype(np.int32)
  labels = torch.tensor(ids, dtype=torch.long)
  if kind == "arcface":
    # PML: margin in degrees; for theta_y > pi - m it switches to
    # cos(theta) - m sin(m) (ours keeps cos(theta + m)): stay below.
    cos_y = np.sum(
      emb
      / np.linalg.norm(emb, axis=1, keepdims=True)
      * (w / np.linalg.norm(w, axis=1, keepdims=True))[ids],
      axis=1,
    )
    assert np.all(np.arccos(cos_y) < np.pi - 0.4)
    pml = losses.ArcFaceLoss(c, D, margin=np.degrees(0.4), scale=16.0)
    ours_fn = functools.partial(margin.arcface, scale=16.0, margin=0.4)
  else:
    pml = losses.CosFaceLoss(c, D, margin=0.3, scale=16.0)
    ours_fn = functools.partial(margin.cosface, scale=16.0, margin=0.3)
  pml = pml.double()

  pml.W.data = torch.tensor(w.T, dtype=torch.float64)  # PML's W is [d, c]
  emb_t = torch.tensor(emb, dtype=torch.float64, requires_grad=True)
  loss = pml(emb_t, labels)
  loss.backward()
  peer = (loss.item(), [emb_t.grad.numpy(), pml.W.grad.numpy().T])
  ours = _ours_value_and_grads(
    lambda e, w_: ours_fn(e, w_, ids), emb, w, argnums=(0, 1)
  )
  _assert_same(ours, peer)
