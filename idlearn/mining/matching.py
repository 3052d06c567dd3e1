"""ISR positive mining: maximum-weight bipartite matching between frames.

ISR (Dou et al., ICCV 2023, Sec. 3.2) treats the person instances of two
frames of one video as the two sides of a bipartite graph weighted by
embedding similarity; the maximum-weight matching gives one positive per
instance (a person appears at most once per frame).

Two solvers:
- `max_weight_matching` / `match_embeddings`: exact (Hungarian,
  `scipy.optimize.linear_sum_assignment`) on the host, NumPy in and out.
  `matching_callback` wraps it with `jax.pure_callback` for use inside a
  jitted step: that call is the host boundary (the device waits for it).
- `sinkhorn` + `mutual_argmax`: entropic optimal transport in JAX (jit-able,
  on device, differentiable), whose plan tends to the optimal permutation as
  the temperature goes to 0; `mutual_argmax` turns it into a one-to-one
  partial matching.
`align_by_matching` wraps either for a jitted train step: embeddings of two
frames in, row-aligned partners and a validity mask out.
"""

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

# Score of a forbidden pair: below every cosine similarity.
_FORBIDDEN = -2.0


def _check_sim(sim: np.ndarray, name: str = "sim") -> None:
  if sim.ndim != 2:
    raise ValueError(f"{name} must be a [m, n] matrix, got shape {sim.shape}")


def max_weight_matching(
  sim: np.ndarray,
  *,
  min_similarity: float | None = None,
  valid_a: np.ndarray | None = None,
  valid_b: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Exact maximum-weight bipartite matching (host, Hungarian algorithm).

  Maximises sum_k sim[rows[k], cols[k]] over one-to-one matchings of
  min(m, n) pairs, then drops pairs below `min_similarity`.

  Args:
    sim: [m, n] similarities between the instances of frame A and frame B.
    min_similarity: pairs with a lower similarity are not returned.
    valid_a, valid_b: [m], [n] bool masks of real (non-padding) instances.
  Returns:
    (rows, cols) int arrays of equal length, rows ascending.
  Raises:
    ValueError: sim not 2-D, not finite, or masks of the wrong length.
  """
  sim = np.asarray(sim, np.float64)
  _check_sim(sim)
  if not np.isfinite(sim).all():
    raise ValueError("sim must be finite (mask padding with valid_a/valid_b)")
  m, n = sim.shape
  ia = np.arange(m) if valid_a is None else _mask_index(valid_a, m, "valid_a")
  ib = np.arange(n) if valid_b is None else _mask_index(valid_b, n, "valid_b")
  rows, cols = linear_sum_assignment(sim[np.ix_(ia, ib)], maximize=True)
  rows, cols = ia[rows], ib[cols]
  if min_similarity is not None:
    keep = sim[rows, cols] >= min_similarity
    rows, cols = rows[keep], cols[keep]
  return rows, cols


def _mask_index(mask: np.ndarray, size: int, name: str) -> np.ndarray:
  mask = np.asarray(mask, bool)
  if mask.shape != (size,):
    raise ValueError(f"{name} must have shape ({size},), got {mask.shape}")
  return np.flatnonzero(mask)


def match_embeddings(
  emb_a: np.ndarray,
  emb_b: np.ndarray,
  *,
  min_similarity: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Assignment of frame B's instances to frame A's by cosine similarity.

  Args:
    emb_a: [m, d], emb_b: [n, d] embeddings of the two frames' instances.
    min_similarity: reject matches with a lower cosine similarity.
  Returns:
    (partner [m] int, -1 where unmatched; similarity [m] of the matched
    pair, 0 where unmatched): z2 = emb_b[partner] gives row-aligned
    positives for `idlearn.losses.reliability_contrastive` with
    valid = partner >= 0.
  """
  emb_a, emb_b = np.asarray(emb_a, np.float64), np.asarray(emb_b, np.float64)
  if emb_a.ndim != 2 or emb_b.ndim != 2 or emb_a.shape[1] != emb_b.shape[1]:
    raise ValueError(
      f"emb_a and emb_b must be [m, d] and [n, d], got {emb_a.shape}, "
      f"{emb_b.shape}"
    )

  def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

  sim = unit(emb_a) @ unit(emb_b).T
  rows, cols = max_weight_matching(sim, min_similarity=min_similarity)
  partner = np.full(len(emb_a), -1, np.int32)
  partner[rows] = cols
  score = np.zeros(len(emb_a), np.float32)
  score[rows] = sim[rows, cols]
  return partner, score


def matching_callback(sim: jax.Array) -> jax.Array:
  """`max_weight_matching` as a host callback usable inside `jax.jit`.

  Args:
    sim: [m, n] similarities (a traced array is fine).
  Returns:
    [m] int32 partner column per row, -1 where unmatched (m > n). No
    gradient flows through the assignment.
  """
  _check_sim(sim)
  m = sim.shape[0]

  def host(s):
    rows, cols = max_weight_matching(np.asarray(s))
    out = np.full(m, -1, np.int32)
    out[rows] = cols
    return out

  out_type = jax.ShapeDtypeStruct((m,), jnp.int32)
  return jax.pure_callback(host, out_type, jax.lax.stop_gradient(sim))


def sinkhorn(
  sim: jax.Array,
  *,
  temperature: float = 0.05,
  num_iters: int = 100,
  valid_a: jax.Array | None = None,
  valid_b: jax.Array | None = None,
) -> jax.Array:
  """Entropic transport plan between two frames' instances (log domain).

  Solves max <P, sim> + temperature * H(P) subject to mass 1 per valid
  instance (a dustbin absorbs the larger side's surplus, as in SuperGlue)
  by Sinkhorn iterations (Cuturi, 2013). As temperature -> 0 the plan
  tends to the maximum-weight matching (a permutation matrix when square).

  Args:
    sim: [m, n] similarities.
    temperature: entropic regularisation.
    num_iters: Sinkhorn iterations (row + column normalisation each).
    valid_a, valid_b: [m], [n] bool masks; masked rows/columns get no mass.
  Returns:
    [m, n] plan: each valid instance of the smaller side carries mass 1,
    each valid instance of the larger side at most 1; masked entries 0.
  """
  _check_sim(sim)
  m, n = sim.shape
  va = jnp.ones(m, bool) if valid_a is None else jnp.asarray(valid_a, bool)
  vb = jnp.ones(n, bool) if valid_b is None else jnp.asarray(valid_b, bool)
  if va.shape != (m,) or vb.shape != (n,):
    raise ValueError(
      f"valid_a and valid_b must have shapes ({m},) and ({n},), got "
      f"{va.shape} and {vb.shape}"
    )
  ma, mb = va.sum().astype(jnp.float32), vb.sum().astype(jnp.float32)
  # Unequal sides: a dustbin row (column) takes the larger side's surplus,
  # so every real instance has mass exactly 1 on the smaller side and at
  # most 1 on the larger. The dustbin's score is a constant times its fixed
  # mass, so it does not change which matching is optimal.
  va = jnp.concatenate([va, (ma < mb)[None]])  # [m+1]
  vb = jnp.concatenate([vb, (mb < ma)[None]])  # [n+1]
  mass_a = jnp.concatenate([jnp.ones(m), jnp.maximum(mb - ma, 0.0)[None]])
  mass_b = jnp.concatenate([jnp.ones(n), jnp.maximum(ma - mb, 0.0)[None]])
  log_a = jnp.where(va, jnp.log(jnp.where(va, mass_a, 1.0)), -jnp.inf)
  log_b = jnp.where(vb, jnp.log(jnp.where(vb, mass_b, 1.0)), -jnp.inf)
  mask = va[:, None] & vb[None, :]
  scores = jnp.pad(sim.astype(jnp.float32), ((0, 1), (0, 1)))
  logk = jnp.where(mask, scores / temperature, -1e30)

  def body(_, uv):
    u, v = uv
    u = log_a - jax.nn.logsumexp(logk + v[None, :], axis=1)
    u = jnp.where(va, u, 0.0)
    v = log_b - jax.nn.logsumexp(logk + u[:, None], axis=0)
    v = jnp.where(vb, v, 0.0)
    return u, v

  init = (jnp.zeros(m + 1), jnp.zeros(n + 1))
  u, v = jax.lax.fori_loop(0, num_iters, body, init)
  plan = jnp.exp(logk + u[:, None] + v[None, :])
  return jnp.where(mask, plan, 0.0)[:m, :n]


def mutual_argmax(plan: jax.Array, *, min_mass: float = 0.5) -> jax.Array:
  """One-to-one partial matching from a plan: mutual row/column argmax.

  Row i is matched to j when j is row i's argmax, i is column j's argmax
  and plan[i, j] >= min_mass (mass is 1 for a certain match).

  Args:
    plan: [m, n] transport plan (e.g. from `sinkhorn`).
    min_mass: smallest plan entry accepted as a match.
  Returns:
    [m] int32 partner column per row, -1 where unmatched.
  """
  _check_sim(plan, "plan")
  j = jnp.argmax(plan, axis=1)  # [m]
  i_back = jnp.argmax(plan, axis=0)  # [n]
  ok = (i_back[j] == jnp.arange(plan.shape[0])) & (
    jnp.take_along_axis(plan, j[:, None], axis=1)[:, 0] >= min_mass
  )
  return jnp.where(ok, j, -1).astype(jnp.int32)


def align_by_matching(
  emb_a: jax.Array,
  emb_b: jax.Array,
  *,
  method: str = "hungarian",
  min_similarity: float | None = None,
  temperature: float = 0.02,
  num_iters: int = 200,
  allowed: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """ISR positives for a jitted step: frame B's partner of each A instance.

  Cosine similarities (no gradient) -> maximum-weight matching, exact on
  the host (`method="hungarian"`, via `matching_callback`) or approximate
  on device (`"sinkhorn"` + `mutual_argmax`). Call it on the global batch
  (outside `shard_map`); then

    z2 = jnp.take(emb_b, partner, axis=0)
    loss = reliability_contrastive(emb_a, z2, valid)

  Args:
    emb_a: [m, d], emb_b: [n, d] embeddings of the two frames' instances.
    method: "hungarian" or "sinkhorn".
    min_similarity: matches below this cosine similarity are not valid.
    temperature, num_iters: Sinkhorn settings.
    allowed: [m, n] bool, the pairs that may be matched (e.g. only across
      cameras); others score below any cosine and are never valid.
  Returns:
    (partner [m] int32, the row of emb_b matched to each row of emb_a (its
    own index, clipped to n - 1, where unmatched); valid [m] bool).
  """
  if method not in ("hungarian", "sinkhorn"):
    raise ValueError(
      f"method must be 'hungarian' or 'sinkhorn', got {method!r}"
    )
  if emb_a.ndim != 2 or emb_b.ndim != 2 or emb_a.shape[1] != emb_b.shape[1]:
    raise ValueError(
      f"emb_a and emb_b must be [m, d] and [n, d], got {emb_a.shape}, "
      f"{emb_b.shape}"
    )

  def unit(x):
    x = x.astype(jnp.float32)
    sq = jnp.sum(x * x, axis=1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(sq, 1e-12))

  sim = jax.lax.stop_gradient(unit(emb_a) @ unit(emb_b).T)  # [m, n]
  if allowed is not None:
    if allowed.shape != sim.shape:
      raise ValueError(
        f"allowed must have shape {sim.shape}, got {allowed.shape}"
      )
    sim = jnp.where(allowed, sim, _FORBIDDEN)
  if method == "hungarian":
    partner = matching_callback(sim)
  else:
    plan = sinkhorn(sim, temperature=temperature, num_iters=num_iters)
    partner = mutual_argmax(plan)
  valid = partner >= 0
  m, n = sim.shape
  safe = jnp.where(valid, partner, jnp.minimum(jnp.arange(m), n - 1))
  matched = jnp.take_along_axis(sim, safe[:, None], axis=1)[:, 0]
  if allowed is not None:
    valid &= matched > _FORBIDDEN
  if min_similarity is not None:
    valid &= matched >= min_similarity
  return safe.astype(jnp.int32), valid
