"""Equal-contribution weights of image distances (IJCV §3.7), as prepared state any method can use.

The papers weight a perceptual distance's terms "so that each term is roughly
the same magnitude" (IJCV §3.7); a distance config with `layer_weights=()`
asks for such weights, and `perceptual.Distance.calibrate` computes them from
pairs of different real images (losses/perceptual.py). A method's `prepare`
(multimodal_jax/prepared.py) calls `calibration_arrays` once, on the first
training targets, and the loop saves the weights in the workdir as
`<which>_distance/layer_weights` and `<which>_distance/pixel_weight`;
`calibrated` applies them when the method is built. The method lists the
distances' config sections in its `PREPARE_DEPENDS_ON`, so that another
distance recomputes them. A distance with explicit weights (or none, as the
pixel distance) prepares nothing and reads no example.
"""

from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp
import ml_collections
import numpy as np

from multimodal_jax.losses import perceptual
from multimodal_jax.methods import base

# Training targets a method without a setting of its own (IMLE: `imle.calibration_examples`)
# calibrates on: the value of the IMLE configs.
CALIBRATION_EXAMPLES = 16


def calibration_arrays(distance_configs: Mapping[str, ml_collections.ConfigDict], train_source,
                       num_examples: int = CALIBRATION_EXAMPLES) -> dict[str, np.ndarray]:
  """Equal-contribution weights for each distance that asks for them ({} if none does).

  Args:
    distance_configs: {which: a `config_lib.default_distance_config()` block},
      e.g. {'loss': config.distance}; `which` names the prepared arrays.
    train_source: the training split (`data.pipeline.PrepareSource`).
    num_examples: calibrate on the first this many training targets (pairs of
      different real images, `perceptual.calibration_pairs`).
  """
  distances = {which: perceptual.make_distance(cfg) for which, cfg in distance_configs.items()}
  if not any(d.needs_calibration for d in distances.values()):
    return {}
  n = min(num_examples, len(train_source))
  y = jnp.asarray(np.stack([train_source[i]["y"] for i in range(n)]))
  arrays = {}
  for which, distance in distances.items():
    if distance.needs_calibration:
      weighted = distance.calibrate(*perceptual.calibration_pairs(y))
      arrays[f"{which}_distance/layer_weights"] = np.asarray(weighted.layer_weights, np.float64)
      arrays[f"{which}_distance/pixel_weight"] = np.asarray(weighted.pixel_weight, np.float64)
  return arrays


def calibrated(distance: perceptual.Distance, which: str, prepared: base.Prepared,
               method: str) -> perceptual.Distance:
  """`distance` with the prepared equal-contribution weights, if it asks for them.

  `method` names the module whose `prepare` computes them (for the error
  when they are missing).
  """
  if not distance.needs_calibration:
    return distance
  key = f"{which}_distance/layer_weights"
  if key not in prepared:
    raise ValueError(f"The {which} distance asks for equal-contribution weights (layer_weights=()), but "
                     f"the prepared state has no {key!r}: build the method with "
                     f"prepared={method}.prepare(config, train_source) (the training loop does).")
  return distance.replace(
      layer_weights=tuple(float(w) for w in prepared[key]),
      pixel_weight=float(prepared[f"{which}_distance/pixel_weight"]),
      calibration="equal contribution, calibrated on training targets (prepared state)")
