"""Mutual Mean Teaching (MMT), with Attentive WaveBlock (AWB).

Ge et al., "Mutual Mean-Teaching: Pseudo Label Refinery for Unsupervised
Domain Adaptation on Person Re-identification", ICLR 2020; Wang et al.,
"Attentive WaveBlock: Complementarity-enhanced Mutual Networks for
Unsupervised Domain Adaptation in Person Re-identification and Beyond",
IEEE TIP 2022. Follows the official code (github.com/yxgeee/MMT,
`MMTTrainer`, `train_mmt_kmeans.py`; github.com/WangWenhao0716/
Attentive-WaveBlock at 740bcfd).

Two networks ("net1", "net2": encoder + BNNeck + classifier over the K
pseudo identities), each with its EMA "mean teacher", alpha_t =
min(1 - 1/(t+1), alpha). Network k and its teacher see the k-th view of
the batch (config.views role "image", count 2). With p / f the
classifier / pooled-feature outputs, s students, t teachers, y the pseudo
labels:

  ce   label-smoothed CE(p_k^s, y)                       (Eq. 5)
  tri  softplus(d_ap - d_an) of f_k^s, batch-hard on y     (Eq. 6)
  sce  soft CE(p_1^s, p_2^t) + soft CE(p_2^s, p_1^t)      (Eq. 7)
  stri soft triplet(f_1^s | f_2^t) + (f_2^s | f_1^t)      (Eq. 8)
  L = (1 - l_ce)(ce_1 + ce_2) + (1 - l_tri)(tri_1 + tri_2)
      + l_ce sce + l_tri stri,   l_ce = 0.5, l_tri = 0.8.  (Eq. 9)

Pseudo labels ("target_kmeans" miner): every `every_steps` (MMT: an
epoch) the two teachers embed the whole unlabelled training split
(config.input; its labels are never read), their L2-normalised retrieval
features are averaged and k-means (K = `num_clusters`) labels them; the
classifiers of all four models restart from the L2-normalised centroids.

WaveBlock (`waveblock`): "plain" inserts it after ResNet layer2 and layer3
of each network's training encoder, "pre_a" after CBAM there, "post_a"
before the non-local block, "none" is plain MMT. The attention layers are
part of the encoder that leaves the run, so the config's encoder carries
them (`config.model.encoder_kw.after_stage`, checked here); WaveBlock is
the identity at evaluation and has no parameters, so only the training
encoders add it. Each of the four forward passes draws its own band.

Retrieval: the first network's mean teacher (`BACKBONE` = net1; set
`use_ema=True` on the evaluators). Both networks start from
`config.model.init` (the source-trained encoder) or, for net2, from
`init2` when given (the paper's two source models, seeds 1 and 2).

State: the miner owns the pseudo labels and centroids (with a
`generation` count); this method owns the classifier "anchors" below.
Assumptions / differences from the official code:
- The classifiers are not overwritten at a re-clustering (only the
  optimizer writes parameters); instead each classifier's weight is
  W = C + P - A with P the trained parameter, C the centroids and A an
  anchor set to P (teacher: to its EMA copy) when a new clustering
  arrives. W then equals the centroids at each re-clustering and follows
  the same updates after it; the teachers' anchors follow the EMA, so
  the teachers' W equal the official EMA of re-initialised weights.
- The optimizer state is kept across re-clusterings (official: a fresh
  Adam each epoch), and weight decay (AdamW, decoupled) pulls P, not W,
  towards 0 (official: Adam's L2 term on W).
- Teachers use the batch's statistics in training mode but keep no
  running statistics of their own; their retrieval features use the
  students' running statistics (official: each EMA model updates its own
  BN buffers through its forward passes).
- Anchors without a positive do not count in the triplet terms (official:
  the anchor is its own positive); P x K batches have none.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from idlearn import fields, losses, sharding
from idlearn.encoders import backbone
from idlearn.encoders.stage_layers import WAVE_STREAM
from idlearn.errors import ConfigError
from idlearn.evaluators.features import unit
from idlearn.methods import base

NETS = ("net1", "net2")
# waveblock -> (attention the config's encoder holds after layer2 / layer3,
# the training encoder's layers there)
ARMS = {
  "none": ("", ""),
  "plain": ("", "wave"),
  "pre_a": ("cbam", "cbam+wave"),
  "post_a": ("nonlocal", "wave+nonlocal"),
}


def _after_stage(layers: str) -> tuple[str, ...]:
  """`after_stage` with `layers` after stages 2 and 3 (layer2, layer3)."""
  return ("", layers, layers, "") if layers else ()


class Student(nn.Module):
  """Encoder + BNNeck + a bias-free classifier whose weight is
  `kernel + offset` (offset: see the module doc).

  Outputs `backbone`'s ("emb" the pooled feature, "feat" = "eval" the
  BNNeck feature) and "logits" [n, K] = feat @ (kernel + offset).
  """

  encoder: nn.Module
  num_clusters: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train=False, offset=None):
    out = backbone(self.encoder, "bnneck", images, train=train,
                   dtype=self.dtype)  # fmt: skip
    d = out["feat"].shape[-1]
    kernel = self.param(
      "classifier", nn.initializers.zeros, (d, self.num_clusters)
    )
    weight = kernel if offset is None else kernel + offset
    out["logits"] = out["feat"] @ weight  # [n, K]
    return out


class MMTNet(nn.Module):
  """Two students; `__call__` runs both (initialisation), `student` one."""

  net1: nn.Module
  net2: nn.Module

  def __call__(self, images, train=False):
    o1, o2 = self.net1(images, train=train), self.net2(images, train=train)
    return {**o1, "emb2": o2["emb"], "eval2": o2["eval"]}

  def student(self, images, train=False, *, which, offset=None):
    """The network `which` ("net1" / "net2") alone."""
    return getattr(self, which)(images, train=train, offset=offset)


class MMT(base.Method):
  NAMES = ("mmt",)
  VIEWS = {"image": 2}
  MINERS = ("target_kmeans",)
  NEEDS_MINER = True
  BACKBONE = ("net1",)
  FIELDS = {
    "waveblock": "none",  # none | plain | pre_a | post_a
    "ce_soft_weight": 0.5,  # lambda_ce
    "tri_soft_weight": 0.8,  # lambda_tri
    "label_smoothing": 0.1,
    "alpha": 0.999,  # EMA decay cap: alpha_t = min(1 - 1/(t+1), alpha)
    "init2": "",  # net2's weights (file / encoder folder); "": model.init
  }

  def __init__(self, name, cfg, setup, miner=None):
    super().__init__(name, cfg, setup, miner)
    arm = cfg["waveblock"]
    if arm not in ARMS:
      raise base.field_error(name, f"waveblock={arm!r}: one of {list(ARMS)}")
    for key in ("ce_soft_weight", "tri_soft_weight"):
      if not 0.0 <= cfg[key] <= 1.0:
        raise base.field_error(name, f"{key}={cfg[key]}: expected in [0, 1]")
    if not 0.0 <= cfg["alpha"] < 1.0:
      raise base.field_error(name, f"alpha={cfg['alpha']}: expected [0, 1)")
    self._check_encoder(arm)
    self.num_clusters = miner.cfg["num_clusters"]
    mesh = setup.mesh
    self._tri = sharding.shard_loss(losses.soft_margin_triplet, mesh)
    self._stri = sharding.shard_loss(losses.soft_triplet, mesh)
    self._sce = sharding.shard_loss(losses.soft_cross_entropy, mesh)

  def _check_encoder(self, arm: str) -> None:
    """The config's encoder holds the arm's attention (and nothing else
    after its stages)."""
    encoder = self.setup.make_encoder()
    given = getattr(encoder, "after_stage", None)
    want = _after_stage(ARMS[arm][0])
    if given is None:
      if arm != "none":
        raise base.field_error(
          self.name,
          f"waveblock={arm!r} needs a ResNet encoder (config.model."
          f"encoder), got {type(encoder).__name__}",
        )
      return
    norm = lambda a: tuple(a) + ("",) * (4 - len(a))  # 4 stages
    if norm(given) != norm(want):
      raise base.field_error(
        self.name,
        f"waveblock={arm!r} needs config.model.encoder_kw.after_stage="
        f"{want} (the attention layers that stay in the retrieval "
        f"encoder), got {tuple(given)}",
      )

  @property
  def neck(self) -> str:
    return "bnneck"

  def _encoder(self) -> nn.Module:
    encoder = self.setup.make_encoder()
    layers = ARMS[self.cfg["waveblock"]][1]
    return (
      encoder.clone(after_stage=_after_stage(layers)) if layers else encoder
    )

  def network(self) -> nn.Module:
    k, dtype = self.num_clusters, self.setup.dtype
    return MMTNet(
      net1=Student(self._encoder(), k, dtype),
      net2=Student(self._encoder(), k, dtype),
    )

  def encoder_inits(self, init):
    return {("net1",): init, ("net2",): self.cfg["init2"] or init}

  def ema_decay(self):
    alpha = self.cfg["alpha"]
    return lambda step: jnp.minimum(
      1.0 - 1.0 / (step.astype(jnp.float32) + 1.0), alpha
    )

  def init_extras(self, out_shapes):
    d = out_shapes["eval"].shape[-1]
    zeros = {k: jnp.zeros((d, self.num_clusters), jnp.float32) for k in NETS}
    return {
      "anchor": zeros,
      "anchor_ema": dict(zeros),
      "generation": jnp.zeros((), jnp.int32),
    }

  def loss(self, net, views, batch, ctx):
    cfg, mined, extras = self.cfg, ctx.mined, ctx.extras
    fresh = mined["generation"] != extras["generation"]
    keep = lambda new, old: {k: jnp.where(fresh, new[k], old[k]) for k in NETS}
    kernel = lambda params: {k: params[k]["classifier"] for k in NETS}
    anchor = keep(kernel(jax.lax.stop_gradient(net.params)), extras["anchor"])
    anchor_ema = keep(kernel(net.teacher_params), extras["anchor_ema"])
    centres = mined["centroids"].T  # [d, K]
    # network k and its teacher see view k; each of the 4 passes its band
    wave = lambda j: {WAVE_STREAM: jax.random.fold_in(ctx.rng, j)}
    s, t = {}, {}
    for i, k in enumerate(NETS):
      x, call = views["image"][i], dict(method=MMTNet.student, which=k)
      s[k] = net(x, offset=centres - anchor[k], rngs=wave(i), **call)
      t[k] = net.teacher(
        x, offset=centres - anchor_ema[k], rngs=wave(2 + i), **call
      )
    y = batch["label"]
    ce, tri, aux = {}, {}, {}
    for i, k in enumerate(NETS, 1):
      ce[k], ce_aux = losses.identity_ce(
        s[k]["logits"], y, label_smoothing=cfg["label_smoothing"]
      )
      tri[k], tri_aux = self._tri(s[k]["emb"], y)
      aux.update({f"ce_{i}": ce[k], f"tri_{i}": tri[k],
                  f"id_acc_{i}": ce_aux["id_acc"]})  # fmt: skip
    sce1, sce_aux = self._sce(s["net1"]["logits"], t["net2"]["logits"])
    sce2, _ = self._sce(s["net2"]["logits"], t["net1"]["logits"])
    stri1, stri_aux = self._stri(s["net1"]["emb"], t["net2"]["emb"], y)
    stri2, _ = self._stri(s["net2"]["emb"], t["net1"]["emb"], y)
    l_ce, l_tri = cfg["ce_soft_weight"], cfg["tri_soft_weight"]
    sce, stri = sce1 + sce2, stri1 + stri2
    total = (
      (1 - l_ce) * (ce["net1"] + ce["net2"])
      + (1 - l_tri) * (tri["net1"] + tri["net2"])
      + l_ce * sce
      + l_tri * stri
    )
    decay = self.ema_decay()(ctx.step)
    aux.update({
      "soft_ce": sce,
      "soft_tri": stri,
      "agreement": sce_aux["agreement"],
      "target_neg": stri_aux["target_neg"],
      "frac_ordered": tri_aux["frac_ordered"],
      "ema_decay": decay,
    })  # fmt: skip
    # the teachers' anchors follow the EMA of the students' (module doc)
    extras = {
      "anchor": anchor,
      "anchor_ema": {
        k: decay * anchor_ema[k] + (1 - decay) * anchor[k] for k in NETS
      },
      "generation": mined["generation"],
    }
    return total, aux, extras


class TargetKMeansMiner(base.Miner):
  """k-means pseudo identities of the unlabelled training split from the
  mean of the two teachers' features, and the P x K loader over them."""

  NAME = "target_kmeans"
  FIELDS = {
    "every_steps": fields.REQUIRED,  # re-cluster interval (MMT: 1 epoch)
    "num_clusters": fields.REQUIRED,  # K (MMT: 500 on Market-1501)
    "n_init": 10,  # k-means restarts (k-means++ seeding)
    "teachers": True,  # cluster the mean teachers' features (else students')
    "batch_size": 64,  # feature extraction
  }

  def __init__(self, cfg, setup):
    super().__init__(cfg, setup)
    inp = setup.input
    p = inp["global_batch_size"] // inp["k"]
    if cfg["num_clusters"] < p:
      raise ConfigError(
        f"config.miner.num_clusters={cfg['num_clusters']} pseudo identities "
        f"cannot fill the P = {p} identities of a batch "
        f"(config.input.global_batch_size // k)"
      )
    self._images = None

  def images(self) -> np.ndarray:
    """uint8 [n, h, w, 3]: the whole training split, at the input size."""
    if self._images is None:
      from idlearn import data

      inp = self.setup.input
      self._images = data.load_split(
        inp["name"],
        inp["split"],
        image_size=tuple(inp["image_size"]),
        data_dir=inp["data_dir"] or None,
        manual_dir=inp["manual_dir"] or None,
      )["image"]
    return self._images

  def sample(self) -> np.ndarray:
    return np.zeros((1, *self.setup.input["image_size"], 3), np.uint8)

  def init_state(self, feature_dims):
    k, d = self.cfg["num_clusters"], feature_dims["eval"]
    return {
      "pseudo": np.full((len(self.images()),), -1, np.int32),
      "centroids": np.zeros((k, d), np.float32),
      "generation": np.zeros((), np.int32),
    }

  def refresh(self, features, state):
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    cfg, images = self.cfg, self.images()
    if len(images) < cfg["num_clusters"]:
      raise ConfigError(
        f"config.miner.num_clusters={cfg['num_clusters']} exceeds the "
        f"{len(images)} training images"
      )
    feats = [
      unit(features(images, batch_size=cfg["batch_size"],
                    use_ema=cfg["teachers"], path=(k,))["eval"])
      for k in NETS
    ]  # fmt: skip
    mean = (feats[0] + feats[1]) / 2  # [n, d], as the official code
    # one OpenMP thread: spinning threads crawl on a busy machine
    with threadpool_limits(1, user_api="openmp"):
      km = KMeans(
        cfg["num_clusters"], n_init=cfg["n_init"], random_state=self.setup.seed
      ).fit(mean.astype(np.float64))
    labels = km.labels_.astype(np.int32)
    sizes = np.bincount(labels, minlength=cfg["num_clusters"])
    new = {
      "pseudo": labels,
      "centroids": unit(km.cluster_centers_).astype(np.float32),
      "generation": np.int32(state["generation"] + 1),
    }
    report = {
      "pseudo/smallest_cluster": float(sizes.min()),
      "pseudo/largest_cluster": float(sizes.max()),
    }
    message = (
      f"pseudo labels: k-means, {cfg['num_clusters']} clusters of "
      f"{sizes.min()}-{sizes.max()} images"
    )
    return new, report, message

  def loader(self, state, step):
    return base.make_loader(
      self.setup.input,
      self.setup.seed + 7919 * (step + 1),
      sampler="pk",
      labels=np.asarray(state["pseudo"]),
    )


METHODS = (MMT,)
MINERS = (TargetKMeansMiner,)
