"""Latent domain expansion (LDE): identity features augmented along domain
directions, in closed form.

Zhang et al., "An Open-World, Diverse, Cross-Spatial-Temporal Benchmark
for Dynamic Wild Person Re-Identification" (arXiv 2403.15119). No official
code was found and only the paper's summary was at hand, so the formulas
here are a reconstruction (see `idlearn/methods/lde.py` for which parts):

- every domain m keeps a running covariance Sigma_m of its domain-relevant
  features (`covariance_update`, ISDA's online estimator: the exact
  population covariance of every feature seen so far);
- an identity feature h_i of domain m is augmented with infinitely many
  samples h_i + delta, delta ~ N(0, lam Sigma_m); the expected
  cross-entropy is bounded by the CE of the logits
      z_ic + lam / 2 (w_c - w_y)^T Sigma_m (w_c - w_y)
  (Wang et al., ISDA, NeurIPS 2019, Eq. 6; `expanded_ce`);
- the mutual similarity lifting-suppression constraint between the
  identity and domain streams (`lift_suppress`).
"""

import jax
import jax.numpy as jnp
import optax

from idlearn.losses._common import l2_normalize

Aux = dict[str, jax.Array]


def covariance_update(
  mean: jax.Array,
  cov: jax.Array,
  count: jax.Array,
  feats: jax.Array,
  domains: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-domain running mean and covariance with one more batch.

  The pooled population statistics of all features seen (ISDA's
  EstimatorCV): with n_m of the batch's rows in domain m, of mean mu_b and
  covariance C_b (divided by n_m), and w = n_m / (N_m + n_m),
    Sigma <- (1 - w) Sigma + w C_b + w (1 - w) (mu - mu_b)(mu - mu_b)^T,
    mu <- (1 - w) mu + w mu_b,  N <- N + n_m.
  A domain absent from the batch keeps its statistics.

  Args:
    mean: float32 [M, D] per-domain means.
    cov: float32 [M, D, D] per-domain covariances.
    count: float32 [M] features seen per domain.
    feats: [n, D] this batch's features (no gradient flows into the
      statistics).
    domains: int [n] each row's domain in [0, M).
  Returns:
    (mean, cov, count) updated, same shapes.
  """
  feats = jax.lax.stop_gradient(feats).astype(jnp.float32)
  onehot = jax.nn.one_hot(domains, mean.shape[0], dtype=jnp.float32)  # [n,M]
  n = onehot.sum(0)  # [M]
  safe = jnp.maximum(n, 1.0)
  mu_b = onehot.T @ feats / safe[:, None]  # [M, D]
  centred = feats[None] - mu_b[:, None]  # [M, n, D]
  cov_b = jnp.einsum("nm,mnd,mne->mde", onehot, centred, centred)
  cov_b = cov_b / safe[:, None, None]
  w = n / jnp.maximum(count + n, 1.0)  # 0 where the domain is absent
  diff = mean - mu_b
  new_cov = (
    (1 - w)[:, None, None] * cov
    + w[:, None, None] * cov_b
    + (w * (1 - w))[:, None, None] * diff[:, :, None] * diff[:, None, :]
  )
  new_mean = (1 - w)[:, None] * mean + w[:, None] * mu_b
  return new_mean, new_cov, count + n


def expanded_ce(
  logits: jax.Array,
  weight: jax.Array,
  labels: jax.Array,
  domains: jax.Array,
  cov: jax.Array,
  *,
  lam: jax.Array | float,
  label_smoothing: float = 0.0,
) -> tuple[jax.Array, Aux]:
  """CE of identity features augmented by N(0, lam Sigma_domain), K -> inf.

  Adds lam / 2 (w_c - w_y)^T Sigma_m (w_c - w_y) to logit c of a row of
  label y and domain m (0 for c = y), then the softmax CE: ISDA's upper
  bound of the expected CE over the augmented features. Computed as
  w_c S w_c - 2 w_c S w_y + w_y S w_y with S w per domain ([M, C, D]),
  never a [n, C, C] or [n, D, D] array.

  Args:
    logits: float32 [n, C] the classifier's logits h W^T of the features.
    weight: [C, D] the classifier's rows w_c (the gradient flows into
      the augmentation term too, as ISDA's).
    labels: int [n] in [0, C).
    domains: int [n] in [0, M).
    cov: [M, D, D] per-domain covariances (no gradient flows into them).
    lam: augmentation strength (ISDA ramps it from 0 over training).
    label_smoothing: eps of a label-smoothed target over the augmented
      logits (0: the bound as derived; > 0 is our assumption, to match
      the re-ID recipe's CE).
  Returns:
    (loss, {"ce": loss, "id_acc": top-1 accuracy of the plain logits,
    "aug_margin": mean added logit over the other classes}).
  """
  weight = weight.astype(jnp.float32)
  cov = jax.lax.stop_gradient(cov).astype(jnp.float32)
  sw = jnp.einsum("mde,ce->mcd", cov, weight)  # [M, C, D]: Sigma_m w_c
  wsw = jnp.einsum("mcd,cd->mc", sw, weight)  # [M, C]
  v = sw[domains, labels]  # [n, D]: Sigma_{m_i} w_{y_i}
  cross = v @ weight.T  # [n, C]: w_c Sigma w_y
  yy = jnp.take_along_axis(wsw[domains], labels[:, None], axis=1)  # [n, 1]
  quad = wsw[domains] - 2 * cross + yy  # [n, C], 0 at c = y
  logits = logits.astype(jnp.float32)
  aug = logits + 0.5 * lam * quad
  num_classes = logits.shape[-1]
  onehot = jax.nn.one_hot(labels, num_classes)
  target = optax.smooth_labels(onehot, label_smoothing)
  loss = optax.softmax_cross_entropy(aug, target).mean()
  hit = (logits.argmax(-1) == labels).astype(jnp.float32).mean()
  margin = (0.5 * lam * quad * (1 - onehot)).sum() / jnp.maximum(
    (1 - onehot).sum(), 1.0
  )
  return loss, {"ce": loss, "id_acc": hit, "aug_margin": margin}


def lift_suppress(
  identity: jax.Array, domain: jax.Array, domains: jax.Array
) -> tuple[jax.Array, Aux]:
  """Mutual similarity lifting-suppression (our reconstruction).

  Suppression: the squared cosine between a sample's identity and domain
  features (the two streams carry different information). Lifting: 1 -
  cosine of the domain features of two different samples of one domain
  (the domain stream gathers its domain); the identity stream's lifting
  is the identity losses' (triplet, CE).

  Args:
    identity: [n, D] identity-relevant features.
    domain: [n, D'] domain-relevant features (D' = D).
    domains: int [n] each row's domain.
  Returns:
    (suppress + lift, {"suppress", "lift"}).
  """
  zi = l2_normalize(identity.astype(jnp.float32))
  zd = l2_normalize(domain.astype(jnp.float32))
  suppress = jnp.mean(jnp.sum(zi * zd, -1) ** 2)
  n = domains.shape[0]
  same = (domains[:, None] == domains[None]) & ~jnp.eye(n, dtype=bool)
  same = same.astype(jnp.float32)
  lift = jnp.sum((1 - zd @ zd.T) * same) / jnp.maximum(same.sum(), 1.0)
  return suppress + lift, {"suppress": suppress, "lift": lift}
