"""Generator networks by config name: `config.model.name`."""

from __future__ import annotations

import flax.linen as nn
import ml_collections

from multimodal_jax.models import conv_generator


def make_generator(model: ml_collections.ConfigDict, *, out_channels: int, upsample_factor: int) -> nn.Module:
  """Builds the generator named `model.name` for the given output shape."""
  if model.name == "conv_generator":
    return conv_generator.ConvGenerator(out_channels=out_channels, features=model.features,
                                        num_blocks=model.num_blocks, upsample_factor=upsample_factor)
  raise ValueError(f"Unknown model.name {model.name!r}; valid: {MODEL_NAMES}")


MODEL_NAMES = ["conv_generator"]
