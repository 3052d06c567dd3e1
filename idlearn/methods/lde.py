"""LDE: latent domain expansion for domain-generalisable re-ID.

Zhang et al., "An Open-World, Diverse, Cross-Spatial-Temporal Benchmark
for Dynamic Wild Person Re-Identification" (arXiv 2403.15119). Trained on
several labelled source domains (data sets), tested on an unseen one.

What is the paper's (from its summary; no official code was found):
a dual-stream split of the features into identity-relevant and
domain-relevant parts, a mutual similarity lifting-suppression
constraint between the streams, and identity features expanded along
domain directions drawn from domain-wise covariances, optimised in closed
form (the K -> infinity cross-entropy, as ISDA) with a triplet loss.

What is ours (assumptions, to be checked against the paper's text):
- the split: the encoder's pooled embedding e times a channel gate a and
  1 - a (`heads.DomainDecouple`, the "decoupled" neck), a BNNeck on the
  identity part (retrieval feature), a BNNeck-like normalisation and a
  domain classifier on the domain part;
- Sigma_m: the running covariance of the normalised domain features of
  domain m (`losses.covariance_update`), used for the identity features of
  domain m; strength lam ramped linearly from 0 to `lam` over the run
  (ISDA's schedule, lam0 = 0.5);
- the lifting-suppression loss as `losses.lift_suppress`;
- the label-smoothed CE over the augmented logits (the recipe's eps 0.1).

Loss = triplet(identity part) + CE_inf(BNNeck(identity part)) +
domain_weight CE(domain classifier) + lift_weight lift_suppress.
Batches need "domain" (config.input.domain_pattern).
"""

import flax.linen as nn
import jax.numpy as jnp

from idlearn import losses, sharding
from idlearn.encoders import backbone, heads
from idlearn.methods import base


class DecoupledNet(nn.Module):
  """Encoder + decoupled neck + identity classifier + domain head.

  Outputs (besides `encoders.backbone`'s with neck "decoupled"):
  "logits" [n, C] (bias-free classifier on "eval"), "domain_feat" [n, d]
  (the domain part normalised), "domain_logits" [n, M].
  """

  encoder: nn.Module
  num_classes: int
  num_domains: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    out = backbone(
      self.encoder, "decoupled", images, train=train, dtype=self.dtype
    )
    out["logits"] = nn.Dense(
      self.num_classes, use_bias=False, dtype=self.dtype, name="classifier"
    )(out["eval"]).astype(jnp.float32)
    dom = heads.BNNeck(dtype=self.dtype, name="domain_bn")(
      out["domain"], train=train
    )
    out["domain_feat"] = dom
    out["domain_logits"] = nn.Dense(
      self.num_domains, dtype=self.dtype, name="domain_classifier"
    )(dom).astype(jnp.float32)
    return out


class LDE(base.Method):
  """Triplet + domain-expanded CE on decoupled identity features."""

  NAMES = ("lde",)
  FIELDS = {
    "margin": 0.3,
    "label_smoothing": 0.1,
    "lam": 0.5,  # augmentation strength at the end of the run (0: none)
    "domain_weight": 1.0,
    "lift_weight": 1.0,
    "num_classes": 0,  # 0: the training split's ids
    "num_domains": 0,  # 0: config.input.domain_pattern's domains
  }

  def __init__(self, name, cfg, setup, miner=None):
    super().__init__(name, cfg, setup, miner)
    for key in ("lam", "domain_weight", "lift_weight"):
      if cfg[key] < 0:
        raise base.field_error(name, f"{key}={cfg[key]}: expected >= 0")
    self.num_classes = cfg["num_classes"] or setup.num_classes()
    self.num_domains = cfg["num_domains"] or setup.num_domains()
    if self.num_domains < 2:
      raise base.field_error(
        name,
        f"num_domains={self.num_domains}: LDE needs >= 2 training domains",
      )
    self._triplet = sharding.shard_loss(
      losses.triplet, setup.mesh, margin=cfg["margin"], mining="batch_hard"
    )

  @property
  def neck(self) -> str:
    return "decoupled"

  def network(self) -> nn.Module:
    return DecoupledNet(
      encoder=self.setup.make_encoder(),
      num_classes=self.num_classes,
      num_domains=self.num_domains,
      dtype=self.setup.dtype,
    )

  def init_extras(self, out_shapes):
    """Per-domain statistics of the domain features: "mean" float32
    [M, d], "cov" [M, d, d], "count" [M]."""
    m, d = self.num_domains, out_shapes["domain_feat"].shape[-1]
    return {
      "mean": jnp.zeros((m, d), jnp.float32),
      "cov": jnp.zeros((m, d, d), jnp.float32),
      "count": jnp.zeros((m,), jnp.float32),
    }

  def loss(self, net, views, batch, ctx):
    cfg = self.cfg
    out = net(base.first(views, "image"))
    domains = batch["domain"]
    mean, cov, count = losses.covariance_update(
      ctx.extras["mean"],
      ctx.extras["cov"],
      ctx.extras["count"],
      out["domain_feat"],
      domains,
    )
    lam = cfg["lam"] * jnp.minimum(ctx.step / self.setup.total_steps, 1.0)
    ce, ce_aux = losses.expanded_ce(
      out["logits"],
      net.params["classifier"]["kernel"].T,
      base.labels_of(batch),
      domains,
      cov,
      lam=lam,
      label_smoothing=cfg["label_smoothing"],
    )
    tri, tri_aux = self._triplet(out["emb"], batch["id"])
    dom, dom_aux = losses.domain_classification(out["domain_logits"], domains)
    ls, ls_aux = losses.lift_suppress(out["emb"], out["domain"], domains)
    total = tri + ce + cfg["domain_weight"] * dom + cfg["lift_weight"] * ls
    aux = {
      **ce_aux,
      **ls_aux,
      "triplet": tri,
      "frac_active": tri_aux.get("frac_active", jnp.float32(0)),
      "domain_ce": dom,
      "domain_acc": dom_aux["accuracy"],
      "lam": lam,
    }
    return total, aux, {"mean": mean, "cov": cov, "count": count}


METHODS = (LDE,)
