"""multimodal_jax: multimodal conditional image synthesis in JAX/Flax."""

import os

# TensorFlow (read by tfds) logs from C++ at import, before absl's logging is
# set up: on CPUs with AVX-512 it prints "oneDNN custom operations are on" and a
# CPU-feature note as INFO lines, which no --verbosity controls. TF only reads
# data here, so its oneDNN kernels buy nothing; set either variable to keep TF's
# behaviour (it must be set before TensorFlow is first imported).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# JAX is not patched on import: programs call `jax_workarounds.install()` (multimodal_jax/cli.py).

__version__ = "0.1.0"
