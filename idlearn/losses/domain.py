"""Camera- and domain-aware objectives: CaCL camera diversity, DomainMix."""

import jax
import jax.numpy as jnp

from idlearn.losses._common import (
  Aux,
  gather,
  global_mean,
  l2_normalize,
  row_offset,
)

_MASKED = -1e9


def _global_sum_mean(x: jax.Array, count: jax.Array, axis_name):
  """sum over the global batch of x / global count (count >= 1 enforced)."""
  if axis_name is None:
    return jnp.sum(x) / jnp.maximum(count, 1)
  total = jax.lax.psum((jnp.sum(x), count), axis_name)
  return total[0] / jnp.maximum(total[1], 1)


def camera_diversity(
  emb: jax.Array,
  ids: jax.Array,
  cams: jax.Array,
  *,
  temperature: float = 0.1,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """CaCL's camera-diversity (CD) loss.

  Lee et al., "Camera-Driven Representation Learning for Unsupervised
  Domain Adaptive Person Re-identification", ICCV 2023, Sec. 3.3. Pseudo
  labels are biased toward cameras (images of one camera share a label),
  so the loss pulls together images of one pseudo identity *taken by other
  cameras*. With cosine similarity s and temperature t, for each anchor i
  with at least one cross-camera positive P_c(i) = {p : y_p = y_i,
  c_p != c_i}:

    l(i) = -1/|P_c(i)| sum_{p in P_c(i)}
             log( exp(s_ip / t) / sum_{k != i} exp(s_ik / t) )

  averaged over those anchors. Assumption: the paper's exact estimator is
  not in the abstract; this is the supervised-contrastive form over the
  (global) batch, where same-camera positives stay in the denominator but
  are never targets. ids < 0 (un-clustered) are never positives.

  Args:
    emb: [b, d] embeddings; ids: [b] pseudo labels; cams: [b] camera ids.
    temperature: t.
    axis_name: mapped batch axis (keys gathered across devices), or None.
  Returns:
    (loss, aux) with aux["frac_anchors"], the fraction of anchors that have
    a cross-camera positive.
  """
  if emb.ndim != 2:
    raise ValueError(f"emb must be [b, d], got {emb.shape}")
  b = emb.shape[0]
  for name, x in (("ids", ids), ("cams", cams)):
    if x.shape != (b,):
      raise ValueError(f"{name} must have shape ({b},), got {x.shape}")
  q = l2_normalize(emb)
  keys = gather(q, axis_name)  # [n*b, d]
  k_ids, k_cams = gather(ids, axis_name), gather(cams, axis_name)
  is_self = jax.nn.one_hot(
    row_offset(b, axis_name) + jnp.arange(b), keys.shape[0], dtype=bool
  )
  logits = jnp.where(is_self, _MASKED, q @ keys.T / temperature)
  logp = jax.nn.log_softmax(logits, axis=1)  # [b, n*b]
  pos = (ids[:, None] == k_ids[None, :]) & (ids[:, None] >= 0)
  pos &= cams[:, None] != k_cams[None, :]
  n_pos = jnp.sum(pos, axis=1)
  has = n_pos > 0
  per = -jnp.sum(jnp.where(pos, logp, 0.0), axis=1) / jnp.maximum(n_pos, 1)
  count = jnp.sum(has).astype(jnp.float32)
  loss = _global_sum_mean(jnp.where(has, per, 0.0), count, axis_name)
  frac = global_mean(jnp.mean(has.astype(jnp.float32)), axis_name)
  return loss, {"frac_anchors": frac}


def domain_balance(
  domain_logits: jax.Array, *, axis_name: str | None = None
) -> tuple[jax.Array, Aux]:
  """DomainMix's domain-balance loss for the feature extractor.

  Wang et al., "DomainMix", BMVC 2021, Sec. 3.3 (and the authors'
  `DGTrainer`): with p = softmax(domain_logits) from the domain
  discriminator,

    L_bal = 1/N sum_i sum_c (p_ic log p_ic + 1/2)

  i.e. the negative entropy of the domain prediction plus a constant (1/2
  per domain; 1 for the paper's two domains). Minimising it makes the
  features' domain unpredictable (p -> uniform) while the discriminator is
  trained with `domain_classification`: the adversarial pair.

  Args:
    domain_logits: [b, D] discriminator logits (D = 2 in the paper).
    axis_name: mapped batch axis, or None.
  Returns:
    (loss, aux) with aux["domain_entropy"], the mean entropy of p.
  """
  if domain_logits.ndim != 2 or domain_logits.shape[1] < 2:
    raise ValueError(
      f"domain_logits must be [b, D] with D >= 2, got {domain_logits.shape}"
    )
  logp = jax.nn.log_softmax(domain_logits.astype(jnp.float32), axis=1)
  neg_ent = jnp.sum(jnp.exp(logp) * logp, axis=1).mean()
  neg_ent = global_mean(neg_ent, axis_name)
  loss = neg_ent + 0.5 * domain_logits.shape[1]
  return loss, {"domain_entropy": -neg_ent}


def domain_classification(
  domain_logits: jax.Array,
  domains: jax.Array,
  *,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """Cross-entropy of the domain discriminator (DomainMix's L_D).

  Args:
    domain_logits: [b, D] discriminator logits.
    domains: [b] int domain of each sample (DomainMix: 0 labelled
      synthetic, 1 unlabelled real).
    axis_name: mapped batch axis, or None.
  Returns:
    (loss, aux) with aux["accuracy"].
  """
  if domain_logits.ndim != 2:
    raise ValueError(f"domain_logits must be [b, D], got {domain_logits.shape}")
  b, d = domain_logits.shape
  if domains.shape != (b,):
    raise ValueError(f"domains must have shape ({b},), got {domains.shape}")
  logp = jax.nn.log_softmax(domain_logits.astype(jnp.float32), axis=1)
  nll = -jnp.sum(jax.nn.one_hot(domains, d) * logp, axis=1).mean()
  acc = jnp.mean(jnp.argmax(logp, axis=1) == domains)
  nll, acc = global_mean((nll, acc), axis_name)
  return nll, {"accuracy": acc}
