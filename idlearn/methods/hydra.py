"""Hydra (SimLAP): contrastive learning from arbitrary pairs of identities.

Wu et al., "Rethinking Positive Pairs in Contrastive Learning" (arXiv
2410.18200, 2024; = SimLAP in the author's code). Followed: the author's
vitookit `vitookit/evaluation/simlap.py` (`SimLAP`, `BasicGate`: the
version trained on P x K batches) and FastSSL `model/simlap.py` (commit
0b99b0c: the loss's normalised form, `losses.hydra`).

One step, on P x K batches (view role "image", one view):
- `prepare` gives each row i a paired class y2_i ("pair_label") besides
  its class y1_i: "arbitrary" (the paper's setting) y2 = y1[perm], perm a
  random permutation of the global batch, so that on PKU-Reid the positive
  pair is mostly two *different* identities; "identical" y2 = y1
  (supervised contrastive learning, SupCon); "distinct" y2 = the class of
  a random row of another class.
- the network: encoder -> h ("emb", the retrieval feature) -> projector z
  = LayerNorm(Dense(ReLU(BN(Dense(h))))) (2048 -> 256, the last Dense
  without bias), and the gate ("fuse"): g = sigmoid(MLP((E[y1] + E[y2]) /
  2)), E a [C, 512] label table, MLP = ReLU, BN, Dense 1024, ReLU, BN,
  Dense 256; "product": sigmoid(MLP(E[y1])) * sigmoid(MLP(E[y2])); "open":
  g = 1 (no filter);
- the loss: `losses.hydra(z, z, g, y1, y2)` (keys = the same batch,
  gathered with their gradient), plus, with `probe`, the cross-entropy of
  a linear classifier on stop_gradient(h) (trains only itself).
Evaluation, retrieval and the encoder that leaves the run use h: the
projector, gate and probe are discarded, as in the paper's evaluation.

One view, not two: the author's current code (vitookit, P x K sampler)
contrasts one augmented batch with itself; positives come from the labels
(K images per identity), so a second view is not needed for them, and the
step costs one forward pass (FastSSL's two-view form costs two).

Assumptions (differences from the author's code):
- unit z and k with a fixed temperature 0.1 (FastSSL's form; FastSSL
  learns the scale from 1/0.1, and the last stored vitookit version uses
  the raw LayerNorm output without scale; an older one gates both sides
  and renormalises); FastSSL's alpha term is not offered;
- the loss is the mean over every positive pair of the global batch (the
  code takes it per GPU, then averages gradients over GPUs);
- "distinct": the code draws y2 uniformly among all other classes, most of
  which are absent from a P x K batch (those rows have no positive); here
  y2 is drawn among the batch's other classes;
- the gate's BatchNorms normalise over the global batch (the code: per
  GPU); the probe is off by default (it does not change the encoder).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from idlearn import losses, sharding
from idlearn.encoders import backbone
from idlearn.encoders.conv import batch_norm
from idlearn.methods import base

PAIRS = ("arbitrary", "identical", "distinct")
GATES = ("fuse", "product", "open")


class HydraProjector(nn.Module):
  """Dense -> BN -> ReLU -> Dense (no bias) -> LayerNorm (vitookit's
  `build_head(2, embed, mlp, out, last_norm='ln')`)."""

  hidden_dim: int = 2048
  out_dim: int = 256
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, h: jax.Array, *, train: bool = False) -> jax.Array:
    """[n, d] -> float32 [n, out_dim]."""
    x = nn.Dense(self.hidden_dim, use_bias=False, dtype=self.dtype)(h)
    x = nn.relu(batch_norm(train, self.dtype, name="bn")(x))
    x = nn.Dense(self.out_dim, use_bias=False, dtype=self.dtype)(x)
    return nn.LayerNorm(epsilon=1e-5, dtype=self.dtype)(x).astype(jnp.float32)


class _GateMLP(nn.Module):
  """ReLU -> BN -> Dense -> ReLU -> BN -> Dense (BasicGate.mlp): logits."""

  hidden_dim: int
  out_dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, e: jax.Array, *, train: bool) -> jax.Array:
    x = batch_norm(train, self.dtype, name="bn0")(nn.relu(e))
    x = nn.Dense(self.hidden_dim, dtype=self.dtype, name="dense0")(x)
    x = batch_norm(train, self.dtype, name="bn1")(nn.relu(x))
    x = nn.Dense(self.out_dim, dtype=self.dtype, name="dense1")(x)
    return x.astype(jnp.float32)


class PairGate(nn.Module):
  """The feature filter: a gate in (0, 1)^out_dim per class pair.

  Attributes:
    num_classes: C, rows of the label table.
    out_dim: gate width (= the projector's).
    mode: "fuse" | "product" | "open" (see the module docstring).
    embed_dim: width of the label table (512).
    hidden_dim: the MLP's hidden width (1024).
  """

  num_classes: int
  out_dim: int
  mode: str = "fuse"
  embed_dim: int = 512
  hidden_dim: int = 1024
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(
    self, y1: jax.Array, y2: jax.Array, *, train: bool = False
  ) -> jax.Array:
    """int [n], int [n] -> float32 gates [n, out_dim]."""
    if self.mode == "open":
      return jnp.ones((y1.shape[0], self.out_dim), jnp.float32)
    table = nn.Embed(
      self.num_classes,
      self.embed_dim,
      embedding_init=nn.initializers.normal(1.0),  # torch nn.Embedding
      name="label_embedding",
    )
    mlp = _GateMLP(self.hidden_dim, self.out_dim, self.dtype, name="mlp")
    if self.mode == "fuse":
      return jax.nn.sigmoid(mlp((table(y1) + table(y2)) / 2, train=train))
    g1 = jax.nn.sigmoid(mlp(table(y1), train=train))
    return g1 * jax.nn.sigmoid(mlp(table(y2), train=train))


class HydraNet(nn.Module):
  """Encoder -> h ("emb" = "eval") -> projector ("proj"), the pair gate
  ("gate", when labels are given) and the optional probe ("probe_logits").
  """

  encoder: nn.Module
  num_classes: int
  proj_hidden: int = 2048
  proj_out: int = 256
  gate_mode: str = "fuse"
  gate_embed: int = 512
  gate_hidden: int = 1024
  probe: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(
    self,
    images: jax.Array,
    train: bool = False,
    labels: jax.Array | None = None,
    pair_labels: jax.Array | None = None,
  ):
    """images [n, h, w, 3], labels / pair_labels int [n] (y1, y2)."""
    out = backbone(self.encoder, "none", images, train=train, dtype=self.dtype)
    out["proj"] = HydraProjector(
      self.proj_hidden, self.proj_out, self.dtype, name="projector"
    )(out["emb"], train=train)
    if labels is None and self.is_initializing():  # create the gate's params
      labels = jnp.zeros(images.shape[:1], jnp.int32)
    if labels is not None:
      out["gate"] = PairGate(
        num_classes=self.num_classes,
        out_dim=self.proj_out,
        mode=self.gate_mode,
        embed_dim=self.gate_embed,
        hidden_dim=self.gate_hidden,
        dtype=self.dtype,
        name="gate",
      )(labels, labels if pair_labels is None else pair_labels, train=train)
    if self.probe:
      out["probe_logits"] = nn.Dense(
        self.num_classes, dtype=self.dtype, name="probe"
      )(jax.lax.stop_gradient(out["emb"])).astype(jnp.float32)
    return out


class Hydra(base.Method):
  """Gated contrastive learning from (arbitrary) pairs of identities."""

  NAMES = ("hydra",)
  VIEWS = {"image": 1}
  FIELDS = {
    "pairs": "arbitrary",  # arbitrary | identical (SupCon) | distinct
    "temperature": 0.1,
    "gate": "fuse",  # fuse | product | open (no filter)
    "gate_embed": 512,  # label table width
    "gate_hidden": 1024,  # the gate MLP's hidden width
    "proj_hidden": 2048,
    "proj_out": 256,  # = the gate's width
    "num_classes": 0,  # label table rows; 0: the training split's ids
    "probe": False,  # online linear probe on stop_gradient(emb)
  }

  def __init__(self, name, cfg, setup, miner=None):
    super().__init__(name, cfg, setup, miner)
    if cfg["pairs"] not in PAIRS:
      raise base.field_error(name, f"pairs={cfg['pairs']!r}: one of {PAIRS}")
    if cfg["gate"] not in GATES:
      raise base.field_error(name, f"gate={cfg['gate']!r}: one of {GATES}")
    if not cfg["temperature"] > 0:
      raise base.field_error(
        name, f"temperature={cfg['temperature']}: expected > 0"
      )
    for key in ("gate_embed", "gate_hidden", "proj_hidden", "proj_out"):
      if cfg[key] < 1:
        raise base.field_error(name, f"{key}={cfg[key]}: expected >= 1")
    sampler = setup.input.get("sampler")
    if sampler != "pk":
      raise base.field_error(
        name,
        f"needs P x K batches (config.input.sampler='pk', got {sampler!r}) "
        "so that each row's class and paired class have samples in the "
        "batch",
      )
    self.num_classes = cfg["num_classes"] or setup.num_classes()
    if self.num_classes < 2:
      raise base.field_error(
        name, f"num_classes={self.num_classes}: expected >= 2"
      )
    self._hydra = sharding.shard_loss(
      losses.hydra, setup.mesh, temperature=cfg["temperature"]
    )

  def network(self) -> nn.Module:
    cfg = self.cfg
    return HydraNet(
      encoder=self.setup.make_encoder(),
      num_classes=self.num_classes,
      proj_hidden=cfg["proj_hidden"],
      proj_out=cfg["proj_out"],
      gate_mode=cfg["gate"],
      gate_embed=cfg["gate_embed"],
      gate_hidden=cfg["gate_hidden"],
      probe=cfg["probe"],
      dtype=self.setup.dtype,
    )

  def prepare(self, rng, views, batch):
    """Adds "pair_label" int32 [b]: the paired class y2 of each row."""
    return views, {**batch, "pair_label": pair_labels(
      rng, base.labels_of(batch), self.cfg["pairs"]
    )}  # fmt: skip

  def loss(self, net, views, batch, ctx):
    y1, y2 = base.labels_of(batch), batch["pair_label"]
    out = net(base.first(views, "image"), labels=y1, pair_labels=y2)
    value, aux = self._hydra(out["proj"], out["proj"], out["gate"], y1, y2)
    if self.cfg["probe"]:
      ce, ce_aux = losses.identity_ce(
        out["probe_logits"], y1, label_smoothing=0.0
      )
      value = value + ce
      aux = {**aux, "probe_ce": ce, "probe_acc": ce_aux["id_acc"]}
    return value, aux, ctx.extras


def pair_labels(rng: jax.Array, labels: jax.Array, pairs: str) -> jax.Array:
  """The paired class y2 of every row of the global batch.

  Args:
    rng: PRNG key.
    labels: int [b] classes y1 of the global batch.
    pairs: "arbitrary" (y1 of a random permutation of the rows),
      "identical" (y1) or "distinct" (y1 of a random row of another class;
      any other row when the batch holds one class).
  Returns:
    int32 [b].
  """
  labels = labels.astype(jnp.int32)
  if pairs == "identical":
    return labels
  if pairs == "arbitrary":
    perm = jax.random.permutation(rng, labels.shape[0])
    return jnp.take(labels, perm, axis=0)
  if pairs == "distinct":
    partner, _ = losses.sample_mix_partners(rng, labels)
    return jnp.take(labels, partner, axis=0)
  raise ValueError(f"pairs={pairs!r}: one of {PAIRS}")


METHODS = (Hydra,)
