"""Mixed-sample objectives: Mixed Barlow Twins, Decoupled Mixup, Metrix.

Each takes embeddings (or logits) of samples that were mixed *before* the
encoder, plus the composition of every mixed sample (which rows, which
labels, which weight), and returns `(loss, aux)` averaged over the global
batch. The mixing of images itself is done by the caller (the train step):
`x_mix = lam * x_a + (1 - lam) * x_b`.
"""

import jax
import jax.numpy as jnp

from idlearn.losses._common import (
  Aux,
  gather,
  global_mean,
  l2_normalize,
  row_offset,
)

# Added to the variance before rsqrt so that constant features stay finite.
_VAR_EPS = 1e-6


def _check_2d(name: str, x: jax.Array, rows: int | None = None) -> None:
  if x.ndim != 2:
    raise ValueError(f"{name} must be [b, d], got shape {x.shape}")
  if rows is not None and x.shape[0] != rows:
    raise ValueError(f"{name} must have {rows} rows, got shape {x.shape}")


def _check_1d(name: str, x: jax.Array, rows: int) -> None:
  if x.shape != (rows,):
    raise ValueError(f"{name} must have shape ({rows},), got {x.shape}")


def _standardize(z: jax.Array, axis_name: str | None) -> jax.Array:
  """Per-dimension zero mean / unit (biased) variance over the global batch."""
  z = z.astype(jnp.float32)
  mean = global_mean(z.mean(axis=0), axis_name)
  zc = z - mean
  var = global_mean(jnp.mean(zc * zc, axis=0), axis_name)
  return zc * jax.lax.rsqrt(var + _VAR_EPS)


def _corr(a: jax.Array, b: jax.Array, axis_name: str | None) -> jax.Array:
  """a^T b / N over the global batch: [b, d] x [b, e] -> [d, e]."""
  return global_mean(a.T @ b / a.shape[0], axis_name)


def mixed_barlow_twins_regularizer(
  z1: jax.Array,
  z2: jax.Array,
  z_mix: jax.Array,
  perm: jax.Array,
  *,
  mix_lambda: float | jax.Array,
  lambda_offdiag: float = 5e-3,
  scale: float = 5.0,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """Mixed Barlow Twins' mixed-sample regulariser (Bandara et al., 2023).

  The mixed image of row i is `mix_lambda * x1[i] + (1 - mix_lambda) *
  x2[perm[i]]`. Assuming linear interpolation in input space gives linear
  interpolation of the standardised features, its cross-correlations with
  each view must equal the interpolated ones (paper Sec. 3):

    C(a, b) = a_n^T b_n / N     (columns standardised over the global batch)
    L = scale * lambda_offdiag * (
          ||C(zm, z1) - [lam C(z1, z1) + (1 - lam) C(z2[perm], z1)]||_F^2
        + ||C(zm, z2) - [lam C(z1, z2) + (1 - lam) C(z2[perm], z2)]||_F^2)

  Added to `barlow_twins(z1, z2)` it gives the Mixed Barlow Twins objective.
  Gradients flow through the targets too, as in the authors' code
  (github.com/wgcban/mix-bt, main.py). Assumption: the variance is the
  biased one (as in idlearn's `barlow_twins`), plus 1e-6 for stability.

  Args:
    z1, z2: [b, d] projector outputs of the two views.
    z_mix: [b, d] projector output of the mixed images.
    perm: [b] int, global row index (into the concatenated batch) of the
      second view each mixed image was mixed with.
    mix_lambda: scalar mixing weight (Beta(1, 1) in the paper).
    lambda_offdiag: Barlow Twins' off-diagonal weight (the paper scales the
      regulariser by it).
    scale: the regulariser's own weight (`mixup_loss_scale`).
    axis_name: mapped axis of the batch (inside shard_map), or None.
  Returns:
    (loss, aux) with aux["reg_view1"], aux["reg_view2"] the two unscaled
    squared Frobenius norms.
  """
  _check_2d("z1", z1)
  b = z1.shape[0]
  _check_2d("z2", z2, b)
  _check_2d("z_mix", z_mix, b)
  if z2.shape != z1.shape or z_mix.shape != z1.shape:
    raise ValueError(
      f"z1, z2, z_mix must share a shape, got {z1.shape}, {z2.shape}, "
      f"{z_mix.shape}"
    )
  _check_1d("perm", perm, b)
  lam = jnp.asarray(mix_lambda, jnp.float32)
  z1n, z2n = _standardize(z1, axis_name), _standardize(z2, axis_name)
  zmn = _standardize(z_mix, axis_name)
  # The mixing partners live anywhere in the global batch: gather, then pick.
  z2p = jnp.take(gather(z2n, axis_name), perm, axis=0)  # [b, d]
  errs = []
  for view in (z1n, z2n):
    target = lam * _corr(z1n, view, axis_name)
    target += (1.0 - lam) * _corr(z2p, view, axis_name)
    diff = _corr(zmn, view, axis_name) - target  # [d, d]
    errs.append(jnp.sum(diff * diff))
  loss = scale * lambda_offdiag * (errs[0] + errs[1])
  return loss, {"reg_view1": errs[0], "reg_view2": errs[1]}


ETA_MODES = ("both", "less", "more")
# openmixup's `_eps`: a component weighing this little (or 1 - this much)
# counts as absent, and the row as unmixed.
_MIX_EPS = 1e-3


def _eta_weights(lam, eta_mode, lam_power):
  """openmixup's per-component weights of the decoupled terms, over eta:
  ([b], [b])."""
  if eta_mode == "both":
    on_a = on_b = jnp.ones_like(lam, dtype=bool)
  else:  # "less": the minority component only; "more": the dominant one
    on_a = (lam < 0.5) if eta_mode == "less" else (lam >= 0.5)
    on_b = ~on_a
  # lambda_adjust("pow", thr=1, idx=lam_power): w -> w ** |idx| (w < 1)
  eta_a = jnp.where(on_a, lam**lam_power, 0.0)
  eta_b = jnp.where(on_b, (1.0 - lam) ** lam_power, 0.0)
  return eta_a, eta_b


def decoupled_mixup(
  logits: jax.Array,
  ids_a: jax.Array,
  ids_b: jax.Array,
  mix_lambda: jax.Array,
  *,
  eta: float = 0.1,
  eta_mode: str = "both",
  lam_power: float = 1.0,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """Decoupled Mixup (DM) cross-entropy (Liu et al., NeurIPS 2023).

  For a sample mixed from classes a and b with weight lam (the official
  openmixup `soft_mix_cross_entropy` + `ClsMixupHead`):

    L = -lam log p_a - (1 - lam) log p_b                 (mixup CE)
        - eta_a log softmax_{c != b}(z)_a - eta_b log softmax_{c != a}(z)_b

  where `softmax_{c != b}` is the softmax over every class but b: each mixed
  class must be recognised against all others *except its partner*, which
  is what lets label-mismatched ("hard") mixed samples train features. The
  weights (openmixup's `eta_weight` with `lam_scale_mode="pow"`, `lam_thr=1`,
  `lam_idx=lam_power`): eta_a = eta lam^p, eta_b = eta (1 - lam)^p for
  `eta_mode="both"`; "less" keeps only the component of weight < 0.5,
  "more" only the other one. p = 1 (default) is openmixup's shipped
  ImageNet / CIFAR base setting; p = 0 gives the paper's unweighted
  two-hot form eta [L_a + L_b]; eta = 0 gives plain mixup CE.

  A row is unmixed (CE term only, as in openmixup) when a == b, when a
  weight is <= 1e-3 (openmixup's `_eps`), or when lam == 0.5 (openmixup
  skips that "trivial solution"). Difference: openmixup averages the
  mixed and unmixed rows separately and adds the two means; here every
  row counts once in one mean over the global batch.

  Args:
    logits: [b, c] classifier logits of the mixed samples.
    ids_a, ids_b: [b] int classes of the two mixed components.
    mix_lambda: [b] weight of component a.
    eta: weight of the decoupled regulariser (openmixup: 0.1 on ImageNet).
    eta_mode: "both", "less" or "more" (see above).
    lam_power: p >= 0 in the weights above.
    axis_name: mapped axis of the batch, or None.
  Returns:
    (loss, aux) with aux["mixup_ce"], aux["decoupled"] (the decoupled
    terms weighted by eta_a / eta, eta_b / eta: loss = mixup_ce + eta *
    decoupled) and aux["top1"] (argmax equals the dominant component's
    class).
  """
  if eta_mode not in ETA_MODES:
    raise ValueError(f"eta_mode must be one of {ETA_MODES}, got {eta_mode!r}")
  _check_2d("logits", logits)
  b, c = logits.shape
  _check_1d("ids_a", ids_a, b)
  _check_1d("ids_b", ids_b, b)
  _check_1d("mix_lambda", mix_lambda, b)
  logits = logits.astype(jnp.float32)
  lam = mix_lambda.astype(jnp.float32)
  hot_a = jax.nn.one_hot(ids_a, c, dtype=bool)  # [b, c]
  hot_b = jax.nn.one_hot(ids_b, c, dtype=bool)
  logp = jax.nn.log_softmax(logits)
  logp_a = jnp.sum(jnp.where(hot_a, logp, 0.0), axis=1)
  logp_b = jnp.sum(jnp.where(hot_b, logp, 0.0), axis=1)
  mixup_ce = -(lam * logp_a + (1.0 - lam) * logp_b)
  # Drop the partner class from the denominator by masking its logit.
  z_a = jnp.sum(jnp.where(hot_a, logits, 0.0), axis=1)
  z_b = jnp.sum(jnp.where(hot_b, logits, 0.0), axis=1)
  lse_no_b = jax.nn.logsumexp(jnp.where(hot_b, -jnp.inf, logits), axis=1)
  lse_no_a = jax.nn.logsumexp(jnp.where(hot_a, -jnp.inf, logits), axis=1)
  eta_a, eta_b = _eta_weights(lam, eta_mode, lam_power)
  decoupled = eta_a * (lse_no_b - z_a) + eta_b * (lse_no_a - z_b)
  mixed = (ids_a != ids_b) & (lam > _MIX_EPS) & (lam < 1.0 - _MIX_EPS)
  decoupled = jnp.where(mixed & (lam != 0.5), decoupled, 0.0)
  dominant = jnp.where(lam >= 0.5, ids_a, ids_b)
  top1 = (jnp.argmax(logits, axis=1) == dominant).mean()
  ce, dec = mixup_ce.mean(), decoupled.mean()
  loss = global_mean(ce + eta * dec, axis_name)
  ce, dec, top1 = global_mean((ce, dec, top1), axis_name)
  return loss, {"mixup_ce": ce, "decoupled": dec, "top1": top1}


METRIX_LOSSES = ("multi_similarity", "contrastive")


def _log1p_weighted_sum_exp(x: jax.Array, w: jax.Array) -> jax.Array:
  """log(1 + sum_j w_j exp(x_j)) along the last axis, w >= 0 (constants)."""
  x = jnp.where(w > 0, x + jnp.log(jnp.maximum(w, 1e-30)), -jnp.inf)
  zeros = jnp.zeros(x.shape[:-1] + (1,), x.dtype)
  return jax.nn.logsumexp(jnp.concatenate([zeros, x], axis=-1), axis=-1)


def _avg_nonzero(terms: jax.Array, axis_name: str | None) -> jax.Array:
  """Sum of the terms over the global batch / how many are > 0 (pml's
  `AvgNonZeroReducer`; 0 when none is). The count is a constant."""
  total = jnp.sum(terms)
  count = jax.lax.stop_gradient(jnp.sum(terms > 0).astype(jnp.float32))
  if axis_name is not None:
    total, count = jax.lax.psum((total, count), axis_name)
  return total / jnp.maximum(count, 1.0)


def _weighted_metric_loss(
  sim: jax.Array,
  w_pos: jax.Array,
  w_neg: jax.Array,
  *,
  kind: str,
  margin: float,
  alpha: float,
  beta: float,
  axis_name: str | None,
) -> jax.Array:
  """Metric loss of anchors [b] x keys [k] with soft targets: a global
  scalar. `sim`: cosine similarities; `w_pos`, `w_neg`: [b, k] weights."""
  if kind == "multi_similarity":
    pos = _log1p_weighted_sum_exp(-alpha * (sim - margin), w_pos) / alpha
    neg = _log1p_weighted_sum_exp(beta * (sim - margin), w_neg) / beta
    return global_mean((pos + neg).mean(), axis_name)
  # Contrastive on Euclidean distances of unit vectors (pml
  # ContrastiveLoss(pos_margin=0, neg_margin=margin), as the Metrix code):
  # d^2 = 2 - 2 s, clipped before the sqrt so that gradients stay finite.
  dist = jnp.sqrt(jnp.maximum(2.0 - 2.0 * sim, 1e-12))
  pos = _avg_nonzero(w_pos * dist, axis_name)
  neg = _avg_nonzero(w_neg * jax.nn.relu(margin - dist), axis_name)
  return pos + neg


def metrix(
  emb: jax.Array,
  ids: jax.Array,
  mixed_emb: jax.Array | None = None,
  mixed_ids_a: jax.Array | None = None,
  mixed_ids_b: jax.Array | None = None,
  mix_lambda: jax.Array | None = None,
  *,
  loss: str = "multi_similarity",
  mix_weight: float = 1.0,
  margin: float = 0.5,
  alpha: float = 2.0,
  beta: float = 50.0,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """Metrix: metric loss with mixed examples and mixed targets.

  Venkataramanan et al., "It Takes Two to Tango: Mixup for Deep Metric
  Learning", ICLR 2022, Sec. 3. Clean embeddings are anchors; every mixed
  example u = lam * x_a + (1 - lam) * x_b (mixed at the input, a feature
  map or the embedding) is a soft positive of anchor i with weight
  w+ = lam [y_i = y_a] + (1 - lam) [y_i = y_b] and a soft negative with
  w- = 1 - w+ (the interpolated target). Embeddings are L2-normalised;
  s = cosine similarity, d = Euclidean distance.

    multi-similarity (alpha, beta, margin m), mean over anchors of
      l(i) = 1/alpha log(1 + sum_u w+ e^{-alpha (s_iu - m)})
           + 1/beta  log(1 + sum_u w- e^{ beta (s_iu - m)})
    contrastive (the official code: pml `ContrastiveLoss(pos_margin=0,
    neg_margin=m)` with its `AvgNonZeroReducer`; Metrix's mixed term
    `lam d + (1 - lam) [m - d]_+`), over all (anchor, key) pairs:
      sum w+ d_iu / #{w+ d_iu > 0} + sum w- [m - d_iu]_+ / #{w- [.]_+ > 0}

  The returned loss is clean + mix_weight * mixed; the clean loss is the
  same formula over the other clean embeddings with 0/1 targets (= pml's
  `MultiSimilarityLoss` / `ContrastiveLoss` without a miner). Every mixed
  example is a key of every anchor (the paper's general form); the
  official code pairs each mixed example with one anchor only.

  Args:
    emb: [b, d] clean embeddings (anchors), ids: [b] their labels.
    mixed_emb: [m, d] embeddings of the mixed examples, or None: the
      clean loss alone (the unmixed baseline).
    mixed_ids_a, mixed_ids_b: [m] labels of their two components.
    mix_lambda: [m] weight of component a.
    loss: "multi_similarity" or "contrastive".
    mix_weight: weight w of the mixed loss.
    margin, alpha, beta: the metric loss' hyper-parameters.
    axis_name: mapped axis (keys are gathered across devices), or None.
  Returns:
    (loss, aux) with aux["clean"] (and aux["mixed"]).
  """
  if loss not in METRIX_LOSSES:
    raise ValueError(
      f"loss must be 'multi_similarity' or 'contrastive', got {loss!r}"
    )
  _check_2d("emb", emb)
  b, d = emb.shape
  _check_1d("ids", ids, b)
  kw = dict(
    kind=loss, margin=margin, alpha=alpha, beta=beta, axis_name=axis_name
  )
  q = l2_normalize(emb)
  keys = gather(q, axis_name)  # [n*b, d]
  key_ids = gather(ids, axis_name)
  is_self = jax.nn.one_hot(
    row_offset(b, axis_name) + jnp.arange(b), keys.shape[0], dtype=bool
  )
  same = ids[:, None] == key_ids[None, :]  # [b, n*b]
  w_pos = (same & ~is_self).astype(jnp.float32)
  w_neg = (~same).astype(jnp.float32)
  clean = _weighted_metric_loss(q @ keys.T, w_pos, w_neg, **kw)
  if mixed_emb is None:
    return clean, {"clean": clean}
  _check_2d("mixed_emb", mixed_emb)
  m = mixed_emb.shape[0]
  if mixed_emb.shape[1] != d:
    raise ValueError(f"mixed_emb must be [m, {d}], got {mixed_emb.shape}")
  _check_1d("mixed_ids_a", mixed_ids_a, m)
  _check_1d("mixed_ids_b", mixed_ids_b, m)
  _check_1d("mix_lambda", mix_lambda, m)
  mk = gather(l2_normalize(mixed_emb), axis_name)  # [n*m, d]
  lam = gather(mix_lambda.astype(jnp.float32), axis_name)
  ida, idb = gather(mixed_ids_a, axis_name), gather(mixed_ids_b, axis_name)
  w_pos = lam * (ids[:, None] == ida) + (1.0 - lam) * (ids[:, None] == idb)
  mixed = _weighted_metric_loss(q @ mk.T, w_pos, 1.0 - w_pos, **kw)
  return clean + mix_weight * mixed, {"clean": clean, "mixed": mixed}


def sample_mix_partners(
  rng: jax.Array,
  ids: jax.Array,
  *,
  alpha: float = 1.0,
  per_batch: bool = False,
) -> tuple[jax.Array, jax.Array]:
  """A mixing partner of another identity and a weight for every row.

  For Metrix's positive-negative mixing and Decoupled Mixup's label-
  mismatched pairs: row i is mixed as lam_i * x_i + (1 - lam_i) *
  x_partner[i], with partner[i] drawn uniformly among the rows of another
  id (any other row if the batch has a single id) and lam_i ~ Beta(alpha,
  alpha) (one lam for every row with `per_batch`, as the Metrix code
  draws it). Call it on the global batch, outside `shard_map`; the mixed
  targets are (ids, ids[partner], lam).

  Args:
    rng: PRNG key.
    ids: [b] int labels.
    alpha: Beta parameter (1.0: uniform weights).
    per_batch: one weight for the whole batch.
  Returns:
    (partner [b] int32, lam [b] float32).
  """
  if ids.ndim != 1:
    raise ValueError(f"ids must be [b], got shape {ids.shape}")
  b = ids.shape[0]
  k_partner, k_lam = jax.random.split(rng)
  other = ids[:, None] != ids[None, :]  # [b, b]
  not_self = ~jnp.eye(b, dtype=bool)
  allowed = jnp.where(jnp.any(other, axis=1, keepdims=True), other, not_self)
  scores = jax.random.uniform(k_partner, (b, b))
  partner = jnp.argmax(jnp.where(allowed, scores, -1.0), axis=1)
  shape = () if per_batch else (b,)
  if isinstance(alpha, int | float) and alpha == 1.0:  # Beta(1, 1) = U(0, 1)
    lam = jax.random.uniform(k_lam, shape)
  else:
    lam = jax.random.beta(k_lam, alpha, alpha, shape)
  lam = jnp.broadcast_to(lam, (b,))
  return partner.astype(jnp.int32), lam.astype(jnp.float32)
