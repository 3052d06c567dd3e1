"""idlearn: pretraining of identity embeddings in JAX/Flax.

`idlearn.load(path)` gives a trained encoder as an `Embedder`;
`idlearn.similarity(embedder, a, b)` the identity similarity of image
pairs. The subpackages hold the rest (losses, encoders, methods, data,
evaluators, training).
"""

__version__ = "0.1.0"

_INFERENCE = ("Embedder", "load", "similarity")


def __getattr__(name: str):
  # Imported on first use: `import idlearn` stays light (no JAX).
  if name in _INFERENCE:
    from idlearn import inference

    return getattr(inference, name)
  raise AttributeError(f"module 'idlearn' has no attribute {name!r}")
