"""Evaluators: NumPy/JAX arrays in, Python floats and NumPy arrays out.

Modules (imported on use; only `linear_probe` needs JAX):
  reid            CMC / mAP / mINP, Market-1501 and CUHK03 protocols
  reranking       k-reciprocal re-ranking, Jaccard distance for clustering
  centralization  neighbour feature centralization (Pose2ID)
  verification    LFW 10-fold accuracy, ROC AUC, TAR@FAR
  pairs           LFW pairs.txt parser, balanced seeded pairs generator
  knn             weighted kNN accuracy (InstDisc / solo-learn)
  neighbors       nearest-neighbour search: exact NumPy, or faiss at scale
  linear_probe    optax L-BFGS softmax probe on frozen features
  utilization     mean squared distance from test to nearest training
                  feature (Metrix's embedding-space utilization)
  effective_rank  exp(entropy of the normalised singular values) of the
                  centred features (Roy & Vetterli): dimensional collapse
  equivariance    R^2 of a ridge probe of the relative augmentation of two
                  views from their features (SIE); its pairs need JAX
  naming          face naming accuracy on image-caption groups (SECLA)
  ridge_probe     float64 ridge classifier: labels from features, new groups
"""
