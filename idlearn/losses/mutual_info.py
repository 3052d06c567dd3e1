"""CLUB: a contrastive log-ratio upper bound of mutual information.

Cheng et al., "CLUB: A Contrastive Log-ratio Upper Bound of Mutual
Information", ICML 2020. AniTalker (Liu et al., 2024) minimises it between
the identity code and the motion code so that motion carries no identity.

The variational network q(y | x) = N(mu(x), diag exp(logvar(x))) is a pure
function of a params pytree (`club_init`, `club_q`), so it lives in the
train state next to the encoder. One step can minimise

  task_loss + weight * club_upper_bound(params, x, y)
            + club_log_likelihood(params, x, y)

with a single optimizer: the bound stops gradients into `params` and the
likelihood stops gradients into `x` and `y`, so the encoders minimise the
bound while q maximises its likelihood (the paper's alternating scheme,
done in one step).

`club_init(..., variance=False)` gives CLUBMean (the authors' later
variant, and what AniTalker's maintainers point to through
`TCLineEstimator(mi_estimator="CLUB")`): q(y | x) = N(mu(x), I), no
log-variance branch. The same two losses then read

  bound = 1/N sum_i [ -|y_i - mu_i|^2 / 2 + 1/N sum_j |y_j - mu_i|^2 / 2 ]
  nll   = 1/N sum_i |y_i - mu_i|^2            (CLUBMean.learning_loss)
"""

import jax
import jax.numpy as jnp

from idlearn.losses._common import Aux, global_mean

Params = dict[str, dict[str, jax.Array]]


def club_init(
  rng: jax.Array,
  x_dim: int,
  y_dim: int,
  *,
  hidden: int = 64,
  variance: bool = True,
) -> Params:
  """Parameters of q(y | x): one-hidden-layer MLPs for mu (and logvar).

  Layout as in the authors' `CLUB` module: Linear-ReLU-Linear for mu and
  Linear-ReLU-Linear-Tanh for logvar; uniform(+-1/sqrt(fan_in)) init.
  Without `variance`, their `CLUBMean` with a hidden layer: mu alone, the
  variance fixed at 1.

  Args:
    rng: PRNG key.
    x_dim, y_dim: dimensions of the conditioning and the predicted code.
    hidden: width of each branch's hidden layer.
    variance: learn the log-variance (CLUB) or fix it at 0 (CLUBMean).
  Returns:
    {"mu": {...}, "logvar": {...}} ("mu" alone without `variance`), each
    with w1 [x_dim, hidden], b1 [hidden], w2 [hidden, y_dim], b2 [y_dim].
  """
  keys = jax.random.split(rng, 8)

  def dense(k_w, k_b, fan_in, fan_out):
    bound = 1.0 / jnp.sqrt(fan_in)
    w = jax.random.uniform(k_w, (fan_in, fan_out), jnp.float32, -bound, bound)
    b = jax.random.uniform(k_b, (fan_out,), jnp.float32, -bound, bound)
    return w, b

  params = {}
  for n, name in enumerate(("mu", "logvar") if variance else ("mu",)):
    w1, b1 = dense(keys[4 * n], keys[4 * n + 1], x_dim, hidden)
    w2, b2 = dense(keys[4 * n + 2], keys[4 * n + 3], hidden, y_dim)
    params[name] = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
  return params


def club_q(params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """mu(x), logvar(x) of q(y | x): [b, x_dim] -> ([b, y_dim], [b, y_dim])
  (logvar all 0 for parameters without a "logvar" branch: CLUBMean)."""

  def mlp(p):
    h = jax.nn.relu(x.astype(jnp.float32) @ p["w1"] + p["b1"])
    return h @ p["w2"] + p["b2"]

  mu = mlp(params["mu"])
  if "logvar" not in params:
    return mu, jnp.zeros_like(mu)
  # tanh keeps the log-variance in (-1, 1), as in the authors' code.
  return mu, jnp.tanh(mlp(params["logvar"]))


def _check(params: Params, x: jax.Array, y: jax.Array) -> None:
  if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
    raise ValueError(
      f"x and y must be [b, x_dim] and [b, y_dim], got {x.shape}, {y.shape}"
    )
  x_dim = params["mu"]["w1"].shape[0]
  y_dim = params["mu"]["w2"].shape[1]
  if x.shape[1] != x_dim or y.shape[1] != y_dim:
    raise ValueError(
      f"params expect x [b, {x_dim}] and y [b, {y_dim}], got x {x.shape} "
      f"and y {y.shape}"
    )


def club_upper_bound(
  params: Params,
  x: jax.Array,
  y: jax.Array,
  *,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """CLUB estimate of I(x; y) over the global batch (the paper's I_CLUB).

    I = 1/N sum_i [ log q(y_i | x_i) - 1/N sum_j log q(y_j | x_i) ]
      = 1/N sum_i sum_d [ mean_j (y_jd - mu_id)^2 - (y_id - mu_id)^2 ]
                        / (2 sigma_id^2)

  (the Gaussian's normaliser cancels). The inner mean over all N samples
  is taken in closed form, mean_j (y_j - mu)^2 = Var(y) + (E[y] - mu)^2,
  so each device needs only the batch moments of y, not all of y.
  `params` receive no gradient here (see the module docstring).

  Args:
    params: q network parameters (`club_init`).
    x: [b, x_dim] conditioning code (e.g. motion, as AniTalker orders them).
    y: [b, y_dim] predicted code (e.g. identity).
    axis_name: mapped batch axis, or None.
  Returns:
    (mi, aux) with aux["positive"] = mean log-ratio numerator term and
    aux["negative"] the marginal term (mi = positive - negative).
  """
  _check(params, x, y)
  params = jax.lax.stop_gradient(params)
  mu, logvar = club_q(params, x)
  y = y.astype(jnp.float32)
  inv2var = 0.5 * jnp.exp(-logvar)  # [b, y_dim]
  y_mean = global_mean(y.mean(axis=0), axis_name)  # [y_dim]
  yc = y - y_mean
  y_var = global_mean(jnp.mean(yc * yc, axis=0), axis_name)
  positive = -jnp.sum((y - mu) ** 2 * inv2var, axis=1)  # [b]
  negative = -jnp.sum((y_var + (y_mean - mu) ** 2) * inv2var, axis=1)
  # The difference, factored: (m - mu)^2 - (y - mu)^2 = (m - y)(m + y - 2 mu)
  # avoids cancelling two large sums in float32.
  mi = jnp.sum((y_var + (y_mean - y) * (y_mean + y - 2 * mu)) * inv2var, 1)
  mi, positive, negative = global_mean(
    (mi.mean(), positive.mean(), negative.mean()), axis_name
  )
  return mi, {"positive": positive, "negative": negative}


def club_log_likelihood(
  params: Params,
  x: jax.Array,
  y: jax.Array,
  *,
  axis_name: str | None = None,
) -> tuple[jax.Array, Aux]:
  """Negative log-likelihood of y under q(y | x): q's training loss.

    L = -1/N sum_i sum_d [ -(y_id - mu_id)^2 / sigma_id^2 - log sigma_id^2 ]

  i.e. twice the Gaussian NLL up to a constant, exactly the authors'
  `learning_loss`. `x` and `y` receive no gradient, only `params`.

  Args:
    params: q network parameters.
    x: [b, x_dim], y: [b, y_dim] codes (treated as data).
    axis_name: mapped batch axis, or None.
  Returns:
    (loss, aux) with aux["mse"], the mean squared prediction error.
  """
  _check(params, x, y)
  x, y = jax.lax.stop_gradient((x, y))
  mu, logvar = club_q(params, x)
  err = (y.astype(jnp.float32) - mu) ** 2
  nll = jnp.sum(err * jnp.exp(-logvar) + logvar, axis=1).mean()
  mse = err.mean()
  nll, mse = global_mean((nll, mse), axis_name)
  return nll, {"mse": mse}
