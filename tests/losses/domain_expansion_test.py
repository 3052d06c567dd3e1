"""LDE's losses vs float64 NumPy: the running per-domain covariance equals
the covariance of every feature seen, the domain-expanded CE equals the
ISDA bound written per sample and bounds a Monte Carlo estimate of the
expected CE, the lifting-suppression terms; 8 devices == 1 device."""

import jax
import jax.numpy as jnp
import numpy as np

from idlearn import losses, sharding

RTOL = 1e-5


def _np_log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _np_expanded_ce(h, w, y, dom, cov, lam, eps, logits=None):
  """Row by row: logits h w_c + lam/2 (w_c - w_y) S (w_c - w_y), then CE
  (`logits` given: those instead of h w_c)."""
  logits = h @ w.T if logits is None else logits
  out = []
  for i in range(len(y)):
    diff = w - w[y[i]]  # [C, D]
    quad = np.einsum("cd,de,ce->c", diff, cov[dom[i]], diff)
    z = logits[i] + 0.5 * lam * quad
    target = np.full(len(z), eps / len(z))
    target[y[i]] += 1 - eps
    out.append(-(target * _np_log_softmax(z)).sum())
  return np.mean(out)


def test_running_covariance_is_the_covariance_of_all_features_seen():
  rng = np.random.default_rng(0)
  m, d = 3, 5
  batches = [
    (rng.normal(size=(12, d)) * [1, 2, 3, 4, 5] + 3, rng.integers(0, m, 12))
    for _ in range(3)
  ]
  batches[1] = (batches[1][0], np.where(batches[1][1] == 2, 0, batches[1][1]))
  mean, cov = jnp.zeros((m, d)), jnp.zeros((m, d, d))
  count = jnp.zeros((m,))
  for x, dom in batches:
    mean, cov, count = losses.covariance_update(
      mean, cov, count, jnp.float32(x), jnp.int32(dom)
    )
  x = np.concatenate([b[0] for b in batches])
  dom = np.concatenate([b[1] for b in batches])
  for k in range(m):
    rows = x[dom == k]
    assert count[k] == len(rows)
    np.testing.assert_allclose(mean[k], rows.mean(0), rtol=RTOL, atol=1e-5)
    np.testing.assert_allclose(
      cov[k], np.cov(rows.T, bias=True), rtol=1e-4, atol=1e-4
    )


def _case(seed=0, n=16, c=6, d=4, m=2):
  rng = np.random.default_rng(seed)
  h = rng.normal(size=(n, d))
  w = rng.normal(size=(c, d))
  y = rng.integers(0, c, n)
  dom = rng.integers(0, m, n)
  a = rng.normal(size=(m, d, d))
  cov = a @ a.transpose(0, 2, 1) / d  # symmetric PSD per domain
  return h, w, y, dom, cov


def test_expanded_ce_matches_the_bound_row_by_row():
  h, w, y, dom, cov = _case()
  for lam, eps in ((0.0, 0.0), (0.5, 0.0), (0.5, 0.1), (2.0, 0.1)):
    got, aux = losses.expanded_ce(
      jnp.float32(h @ w.T), jnp.float32(w), jnp.int32(y), jnp.int32(dom),
      jnp.float32(cov), lam=lam, label_smoothing=eps,
    )  # fmt: skip
    want = _np_expanded_ce(h, w, y, dom, cov, lam, eps)
    np.testing.assert_allclose(got, want, rtol=RTOL)
    hit = ((h @ w.T).argmax(-1) == y).mean()
    np.testing.assert_allclose(aux["id_acc"], hit)
  # the gradient reaches the classifier through the augmentation term too
  grad_w = jax.grad(
    lambda w_: losses.expanded_ce(
      jnp.float32(h @ w.T),
      w_,
      jnp.int32(y),
      jnp.int32(dom),
      jnp.float32(cov),
      lam=1.0,
    )[0]  # fmt: skip
  )(jnp.float32(w))
  eps_fd, k = 1e-3, (2, 1)
  wp, wm = w.copy(), w.copy()
  wp[k] += eps_fd
  wm[k] -= eps_fd
  z = h @ w.T  # held fixed: d/dW of the quadratic term only
  fd = (
    _np_expanded_ce(h, wp, y, dom, cov, 1.0, 0.0, z)
    - _np_expanded_ce(h, wm, y, dom, cov, 1.0, 0.0, z)
  ) / (2 * eps_fd)
  np.testing.assert_allclose(grad_w[k], fd, rtol=1e-3)


def test_expanded_ce_bounds_the_expected_ce_of_augmented_features():
  h, w, y, dom, cov = _case(seed=1, n=6)
  lam = 0.5
  bound = _np_expanded_ce(h, w, y, dom, cov, lam, 0.0)
  rng = np.random.default_rng(2)
  mc = []
  for i in range(len(y)):
    delta = rng.multivariate_normal(np.zeros(4), lam * cov[dom[i]], 100_000)
    logp = _np_log_softmax((h[i] + delta) @ w.T)[:, y[i]]
    mc.append(-logp.mean())
  mc = np.mean(mc)
  plain = _np_expanded_ce(h, w, y, dom, cov, 0.0, 0.0)
  assert plain < mc <= bound + 1e-3, (plain, mc, bound)


def test_lift_suppress_matches_numpy():
  rng = np.random.default_rng(3)
  zi, zd = rng.normal(size=(2, 10, 6))
  dom = np.array([0, 0, 1, 1, 1, 0, 1, 0, 0, 1])
  got, aux = losses.lift_suppress(jnp.float32(zi), jnp.float32(zd), dom)
  ni = zi / np.linalg.norm(zi, axis=1, keepdims=True)
  nd = zd / np.linalg.norm(zd, axis=1, keepdims=True)
  suppress = np.mean(np.sum(ni * nd, 1) ** 2)
  pairs = [
    1 - nd[i] @ nd[j]
    for i in range(10)
    for j in range(10)
    if i != j and dom[i] == dom[j]
  ]
  np.testing.assert_allclose(aux["suppress"], suppress, rtol=RTOL)
  np.testing.assert_allclose(aux["lift"], np.mean(pairs), rtol=RTOL)
  np.testing.assert_allclose(got, suppress + np.mean(pairs), rtol=RTOL)


def test_eight_devices_equal_one():
  h, w, y, dom, cov = _case(seed=4, n=16)

  @jax.jit
  def terms(feats, y, dom):
    stats = losses.covariance_update(
      jnp.zeros((2, 4)), jnp.zeros((2, 4, 4)), jnp.zeros((2,)), feats, dom
    )
    ce, _ = losses.expanded_ce(
      feats @ jnp.float32(w).T, jnp.float32(w), y, dom, stats[1], lam=0.5
    )
    return stats, ce, losses.lift_suppress(feats, feats[::-1], dom)[0]

  args = (jnp.float32(h), jnp.int32(y), jnp.int32(dom))
  outs = []
  for n in (1, 8):
    mesh = sharding.make_data_mesh(jax.devices()[:n])
    outs.append(terms(*jax.device_put(args, sharding.batch_sharding(mesh))))
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), *outs
  )
