"""Linear probe: a softmax classifier trained on frozen features with optax.

Features are standardised with the training set's mean and std. The
classifier minimises mean cross-entropy + weight_decay / 2 * |W|^2 (bias
unpenalised) with full-batch L-BFGS (`optax.lbfgs`): the problem is convex,
so the result does not depend on a learning-rate schedule. The weight decay
is chosen from a grid by accuracy on a seeded held-out part of the
training set, then the probe is refit on the whole training set and
scored once on the test set.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu

WEIGHT_DECAYS = (1e-5, 1e-4, 1e-3, 1e-2)


@functools.partial(jax.jit, static_argnames=("num_classes", "max_steps"))
def fit(
  x: jax.Array,
  y: jax.Array,
  sample_weight: jax.Array,
  weight_decay: jax.Array,
  *,
  num_classes: int,
  max_steps: int = 500,
  tol: float = 1e-5,
) -> tuple[dict[str, jax.Array], jax.Array]:
  """L-BFGS fit of a linear softmax classifier.

  Args:
    x: [n, d] float32 features (already standardised).
    y: [n] int32 labels in [0, num_classes).
    sample_weight: [n] float32 weights of the mean cross-entropy (0 leaves an
      example out without changing shapes, so held-out fits share one
      compilation).
    weight_decay: L2 coefficient on the weights.
    max_steps: L-BFGS iterations at most; stops earlier at |grad| < tol.

  Returns: ({"w": [d, c], "b": [c]}, final objective).
  """

  def objective(p):
    logits = x @ p["w"] + p["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    ce = jnp.sum(sample_weight * ce) / jnp.sum(sample_weight)
    return ce + 0.5 * weight_decay * jnp.sum(p["w"] ** 2)

  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(objective)

  def step(carry):
    p, state = carry
    value, grad = value_and_grad(p, state=state)
    updates, state = opt.update(
      grad, state, p, value=value, grad=grad, value_fn=objective
    )
    return optax.apply_updates(p, updates), state

  def running(carry):
    _, state = carry
    count = otu.tree_get(state, "count")
    grad = otu.tree_get(state, "grad")
    return (count == 0) | ((count < max_steps) & (otu.tree_norm(grad) >= tol))

  p = {
    "w": jnp.zeros((x.shape[1], num_classes), jnp.float32),
    "b": jnp.zeros((num_classes,), jnp.float32),
  }
  p, _ = jax.lax.while_loop(running, step, (p, opt.init(p)))
  return p, objective(p)


def _accuracy(p, x, y, top):
  logits = np.asarray(x @ p["w"] + p["b"])
  true = logits[np.arange(len(y)), y][:, None]
  return float(np.mean((logits > true).sum(axis=1) < top))


def _check(feats, labels, name, d=None):
  x, y = np.asarray(feats), np.asarray(labels)
  if x.ndim != 2 or x.shape[0] == 0 or (d is not None and x.shape[1] != d):
    raise ValueError(
      f"{name}_feats must be a non-empty [n, d] array: {x.shape}"
    )
  if not np.isfinite(x).all():
    raise ValueError(f"{name}_feats contains NaN or infinite values")
  if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"{name}_labels must be [{len(x)}] integers: {y.shape}")
  return x.astype(np.float32), y.astype(np.int32)


def evaluate(
  train_feats: Any,
  train_labels: Any,
  test_feats: Any,
  test_labels: Any,
  *,
  num_classes: int | None = None,
  weight_decays: tuple[float, ...] = WEIGHT_DECAYS,
  val_fraction: float = 0.2,
  max_steps: int = 500,
  seed: int = 0,
) -> dict[str, Any]:
  """Top-1 / top-5 accuracy of a linear probe on frozen features.

  Args:
    train_feats, train_labels: [n, d] features, [n] int labels.
    test_feats, test_labels: [m, d], [m]; used once, after model selection.
    num_classes: defaults to 1 + the largest label.
    weight_decays: grid searched on the held-out split (one value: no search).
    val_fraction: share of the training set held out for the search.
    max_steps: L-BFGS iterations per fit.
    seed: NumPy seed of the held-out split.

  Returns: {"top1", "top5", "weight_decay" (chosen), "val_top1" (its
    held-out accuracy, NaN without a search), "loss" (final objective)}.
  """
  x, y = _check(train_feats, train_labels, "train")
  xt, yt = _check(test_feats, test_labels, "test", x.shape[1])
  c = int(num_classes or max(y.max(), yt.max()) + 1)
  if y.min() < 0 or yt.min() < 0 or max(y.max(), yt.max()) >= c:
    raise ValueError(f"labels must lie in [0, {c})")

  def standardise(a, ref):
    return (a - ref.mean(0)) / (ref.std(0) + 1e-6)

  ones = np.ones(len(x), np.float32)

  fit_ = functools.partial(fit, num_classes=c, max_steps=max_steps)
  wd, val_top1 = float(weight_decays[0]), float("nan")
  if len(weight_decays) > 1:
    perm = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(val_fraction * len(x))))
    va, tr = perm[:n_val], perm[n_val:]
    xs, held_in = standardise(x, x[tr]), ones.copy()
    held_in[va] = 0.0
    scores = []
    for w in weight_decays:
      p, _ = fit_(xs, y, held_in, w)
      scores.append(_accuracy(p, xs[va], y[va], 1))
    wd, val_top1 = float(weight_decays[int(np.argmax(scores))]), max(scores)
  p, loss = fit_(standardise(x, x), y, ones, wd)
  xt = standardise(xt, x)
  return {
    "top1": _accuracy(p, xt, yt, 1),
    "top5": _accuracy(p, xt, yt, 5),
    "weight_decay": wd,
    "val_top1": val_top1,
    "loss": float(loss),
  }
