"""Using a trained encoder: `load` -> `Embedder`, features, similarity.

embedder = idlearn.load("runs/quickstart")
feats = embedder.embed(images)            # float32 [n, d], L2-normalised
sims = idlearn.similarity(embedder, generated, references)
"""

from idlearn.inference.embedder import (
  Embedder,
  list_images,
  load,
  similarity,
)
from idlearn.inference.features import FeatureFn

__all__ = ["Embedder", "FeatureFn", "list_images", "load", "similarity"]
