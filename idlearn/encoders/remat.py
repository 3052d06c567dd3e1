"""Rematerialisation that XLA:CPU keeps: a block's activations are
recomputed in the backward pass instead of being held from the forward."""

import flax.linen as nn
import jax
import jax.numpy as jnp


def recompute_in_backward(mdl: nn.Module, x: jax.Array, post=None) -> jax.Array:
  """post(mdl(x)), recomputed in the backward pass once its cotangent exists.

  `nn.remat` saves only the inputs too, but XLA:CPU drops the optimization
  barrier that is meant to order the recomputation and schedules every
  block's recomputation at the start of the backward pass, where they
  are all live at once (measured: no memory saved at all). Here the
  recomputation reads params offset by 0 * g, a data dependency on the
  cotangent that XLA keeps (0 * g is not folded for floats).

  Statistics this call updates are outputs of a custom VJP: a second call
  in the same differentiated function must read them through
  `lax.stop_gradient` (as `methods.Network` does), or the second call's
  VJP closes over tracers of the first's differentiation.

  Args:
    mdl: a bound submodule, called in training mode; its batch
      statistics update as in `mdl(x)`.
    x: its input.
    post: an optional parameter-free function applied to mdl's output.
  Returns: post(mdl(x)).
  """
  post = post or (lambda y: y)
  box = {}

  def call(m, x):
    return post(m(x))

  def fwd(m, x):
    box["mdl"] = m.clone(parent=None)
    # Only params and x are residuals. The other collections (running
    # statistics) reach this function closed over, and may be tracers of
    # the enclosing differentiation (a second call threading statistics
    # from the first): kept past the forward pass they would leak. The
    # recomputation, in training mode, normalises with batch statistics
    # and reads no running ones, so placeholders of their shapes serve.
    box["others"] = {
      k: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), v)
      for k, v in m.variables.items()
      if k != "params"
    }
    return call(m, x), (m.variables["params"], x)

  def bwd(res, g):
    params, x = res
    zero = 0 * g[(0,) * g.ndim]
    params = jax.tree.map(lambda p: p + zero.astype(p.dtype), params)
    others = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), box["others"])

    def run(params, x):
      v = {**others, "params": params}
      return box["mdl"].apply(v, x, method=call, mutable=True)[0]

    dparams, dx = jax.vjp(run, params, x)[1](g)
    return {"params": dparams}, dx

  return nn.custom_vjp(call, fwd, bwd)(mdl, x)
