r"""Per-device memory of the margin classifier: centres replicated vs sharded.

The classifier step of ArcFace on a global batch of embeddings: the loss,
its gradient in the embeddings and the centres, and an Adam update of the
centres, compiled for n fake CPU devices. Replicated (every device holds
all C centres and both Adam moments: `losses.arcface`) against sharded
(Partial FC, `losses.partial_fc`: 1/n of them each), with and without
negative sampling. Memory is XLA's own account of one device's program
(`compiled.memory_analysis()`: arguments + temporaries), from shapes only,
so 10M classes need no RAM. Wall time runs the small cases for real.

  python benchmarks/partial_fc.py                 # 8 devices, d=512
  python benchmarks/partial_fc.py --classes=100000,1000000 --devices=8

Prints one table.
"""

import argparse
import functools
import os
import sys
import time


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--devices", type=int, default=8)
  p.add_argument("--classes", default="100000,1000000,10000000")
  p.add_argument("--dim", type=int, default=512)
  p.add_argument("--batch", type=int, default=1024, help="global batch")
  p.add_argument("--sample_rate", type=float, default=0.1)
  p.add_argument(
    "--time_below",
    type=int,
    default=200_000,
    help="also time the step (3 runs, best) for C up to this",
  )
  args = p.parse_args()
  os.environ["XLA_FLAGS"] = (
    f"--xla_force_host_platform_device_count={args.devices}"
  )
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
  import jax
  import jax.numpy as jnp
  import optax

  from idlearn import losses, sharding
  from idlearn.methods.margin import class_rows

  mesh = sharding.make_data_mesh()
  n = mesh.shape[sharding.DATA_AXIS]
  split, rep = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  tx = optax.adam(1e-3)

  def step_fn(loss_fn):
    def step(w, opt, emb, ids, rng):
      (loss, _), (_, dw) = jax.value_and_grad(loss_fn, (0, 1), has_aux=True)(
        emb, w, ids, rng
      )
      upd, opt = tx.update(dw, opt, w)
      return optax.apply_updates(w, upd), opt, loss

    return step

  def variants(c):
    rows = class_rows(c, n)
    hyper = dict(scale=64.0, margin=0.5)

    def replicated_loss(emb, w, ids, rng, axis_name):
      del rng
      return losses.arcface(emb, w, ids, axis_name=axis_name, **hyper)

    def pfc(emb, w, ids, rng, axis_name, sample_rate):
      return losses.partial_fc(
        emb, w, ids, rng=rng, axis_name=axis_name, num_classes=c,
        sample_rate=sample_rate, **hyper,
      )  # fmt: skip

    yield (
      "replicated",
      c,
      rep,
      sharding.shard_loss(replicated_loss, mesh, replicated_args=(1, 3)),
    )
    yield (
      "sharded",
      rows,
      split,
      sharding.shard_loss(
        functools.partial(pfc, sample_rate=1.0), mesh, replicated_args=(3,)
      ),
    )
    yield (
      f"sharded r={args.sample_rate:g}",
      rows,
      split,
      sharding.shard_loss(
        functools.partial(pfc, sample_rate=args.sample_rate),
        mesh,
        replicated_args=(3,),
      ),
    )

  print(
    f"ArcFace classifier step (loss + grads + Adam on the centres), "
    f"{n} CPU devices, d={args.dim}, global batch {args.batch}; per-device "
    "memory from XLA's memory_analysis (GiB); time: best of 3"
  )
  print(
    f"{'classes':>10} {'centres':<16} {'args/dev':>9} {'temp/dev':>9} "
    f"{'total/dev':>9} {'ms/step':>8}"
  )
  gib = 2.0**30
  for c in [int(x) for x in args.classes.split(",")]:
    for label, rows, w_sharding, loss in variants(c):
      f32, d = jnp.float32, args.dim
      w = jax.ShapeDtypeStruct((rows, d), f32, sharding=w_sharding)
      opt = jax.tree.map(
        lambda x, s=w_sharding: jax.ShapeDtypeStruct(
          x.shape, x.dtype, sharding=s if x.ndim else rep
        ),
        jax.eval_shape(tx.init, w),
      )
      emb = jax.ShapeDtypeStruct((args.batch, d), f32, sharding=split)
      ids = jax.ShapeDtypeStruct((args.batch,), jnp.int32, sharding=split)
      key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=rep)
      shard = (w_sharding, jax.tree.map(lambda x: x.sharding, opt), rep)
      fn = jax.jit(step_fn(loss), out_shardings=shard, donate_argnums=(0, 1))
      compiled = fn.lower(w, opt, emb, ids, key).compile()
      mem = compiled.memory_analysis()
      args_b, temp_b = mem.argument_size_in_bytes, mem.temp_size_in_bytes
      ms = float("nan")
      if c <= args.time_below:
        real = [
          jax.device_put(jnp.zeros(x.shape, x.dtype), x.sharding)
          for x in (emb, ids)
        ]
        wv = jax.device_put(
          jax.random.normal(jax.random.PRNGKey(0), w.shape) * 0.01, w_sharding
        )
        ov = jax.device_put(tx.init(wv), shard[1])
        kv = jax.device_put(jax.random.PRNGKey(1), rep)
        best = float("inf")
        for _ in range(4):
          t = time.perf_counter()
          wv, ov, lv = compiled(wv, ov, *real, kv)
          lv.block_until_ready()
          best = min(best, time.perf_counter() - t)
        ms = 1e3 * best
      print(
        f"{c:>10} {label:<16} {args_b / gib:9.3f} {temp_b / gib:9.3f} "
        f"{(args_b + temp_b) / gib:9.3f} {ms:8.1f}"
      )


if __name__ == "__main__":
  main()
