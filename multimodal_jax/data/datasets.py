"""Imports every dataset module so that each registers itself with `registry`."""

# pylint: disable=unused-import
from multimodal_jax.data import colorization_photos
from multimodal_jax.data import digits_box
from multimodal_jax.data import digits_completion
from multimodal_jax.data import facades
from multimodal_jax.data import local_photos_sr
from multimodal_jax.data import paper_sr
from multimodal_jax.data import pets_lfw
from multimodal_jax.data import street_layouts
from multimodal_jax.data import toy3d
from multimodal_jax.data import toy_scenes
