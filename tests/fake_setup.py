"""A `methods.Setup` for tests that build a method without the train loop."""

import jax
import jax.numpy as jnp

from idlearn import methods, sharding


def fake_setup(**overrides) -> methods.Setup:
  """A `methods.Setup` with test defaults; `overrides` replace its fields.

  The defaults: a 1-device data mesh, no encoder (`make_encoder` gives
  None), float32, the fake data set PK-sampled with k=4, one "image" view,
  seed 0, 10 steps and 5 classes (`num_domains` keeps `Setup`'s default,
  which raises). Overrides take `Setup`'s own types (callables for
  `make_encoder`, `num_classes` and `num_domains`), and replace a field
  whole: `input` is not merged into the default.
  """
  fields = dict(
    make_encoder=lambda: None,
    dtype=jnp.float32,
    input={"name": "fake", "sampler": "pk", "k": 4},
    views={"image": 1},
    seed=0,
    total_steps=10,
    num_classes=lambda: 5,
  )
  if "mesh" not in overrides:  # mesh=None stays None
    fields["mesh"] = sharding.make_data_mesh(jax.devices()[:1])
  return methods.Setup(**{**fields, **overrides})
