"""multimodal_jax: multimodal conditional image synthesis in JAX/Flax."""

from multimodal_jax import jax_workarounds  # noqa: F401  (installs the CPU compile-time workaround)

__version__ = "0.1.0"
