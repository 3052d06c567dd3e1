"""idlearn: self-supervised and metric-learning pretraining of identity
embeddings (faces, person and object re-ID) in JAX/Flax."""

import setuptools

EXPORT = [
  "onnx>=1.20.1",
  "onnx-ir>=0.2.1",
  "onnxruntime>=1.24.1",
  "dm-pix>=0.4.4",
  "einops>=0.8.1",
  "equinox>=0.13.1",
  "orbax-export>=0.0.6",
]

setuptools.setup(
  name="idlearn",
  version="0.1.0",
  description=__doc__.splitlines()[0],
  long_description=open("README.md", encoding="utf-8").read(),
  long_description_content_type="text/markdown",
  license="Apache-2.0",
  python_requires=">=3.11",
  packages=setuptools.find_packages(include=["idlearn", "idlearn.*"]),
  # The small real data sets the quickstart and tests use (see
  # idlearn/data/bundled/DATA_CARD.md).
  package_data={"idlearn.data": ["bundled/**/*"]},
  include_package_data=True,
  install_requires=[
    "jax>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "tensorflow-datasets>=4.9.10",
    "grain>=0.2.18",
    "ml-collections>=1.1.0",
    "absl-py",
    "numpy",
    "scipy",
    "scikit-learn",
    "pillow",
    "tensorboardX",
    "tqdm",
    "matplotlib",
  ],
  extras_require={
    # Neighbour search at scale (idlearn.evaluators.neighbors): without it
    # large searches fall back to exact NumPy, with a warning.
    "scale": ["faiss-cpu"],
    # `idlearn export --format=onnx`: jax2onnx's dependencies. jax2onnx
    # itself pins orbax-checkpoint < 0.11.37 (we need >= 0.12.8) for parts
    # we do not use: install it with `pip install --no-deps jax2onnx`.
    "export": EXPORT,
    # Peers the tests compare against. torch 2.13.0 is the CPU wheel the
    # test machines carry; lightly and torchreid are installed with
    # --no-deps by the README command (their declared torchvision
    # dependency is a multi-GB build the comparisons do not need).
    "test": [
      "pytest",
      "pytest-xdist",
      "chex",
      "ruff",
      "torch==2.13.0",
      "pytorch-metric-learning==2.9.0",
      # The faiss path of idlearn.evaluators.neighbors.
      "faiss-cpu",
      # ONNX export, checked with onnxruntime (jax2onnx: --no-deps).
      *EXPORT,
      # Executing the colab/ notebooks.
      "nbclient",
      "nbformat",
      "ipykernel",
    ],
  },
  entry_points={"console_scripts": ["idlearn=idlearn.main:entry_point"]},
)
