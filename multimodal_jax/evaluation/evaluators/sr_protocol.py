"""`sr_protocol`: the NTIRE 2021 "Learning the Super-Resolution Space" protocol, and BasicSR's Y-channel PSNR/SSIM.

As the challenge's `measure.py` does, samples are first quantised to 8 bits
(they were read from PNGs there). Per input, over its N samples:
  lr_psnr_mean, lr_psnr_worst  LR consistency: each sample and the ground truth
                               passed through the dataset's own degradation
                               (`DatasetSpec.degrade`: how the inputs were made),
                               PSNR between them on 0-255 (capped at 100 dB for
                               identical images); mean, and the worst sample.
                               The challenge's target: 45 dB.
  sr_diversity_score           (global best - local best) / global best x 100,
                               global best = the lowest mean of any one sample's
                               spatial LPIPS map (`Distance.spatial_map`), local
                               best = the mean over pixels of the per-pixel
                               minimum over samples of those maps. A deterministic
                               method scores 0; SRFlow 10.62 at x8.
  psnr_y_{best,mean}, ssim_y_{best,mean}
                               PSNR / SSIM on the Y channel (ITU-R BT.601, 16-235)
                               with a border of `scale` pixels cropped: BasicSR's
                               convention, the numbers SR papers print.
The averages are over inputs. The bicubic upsampling of the same inputs gets
the same numbers (`bicubic/lr_psnr`, `bicubic/psnr_y`, `bicubic/ssim_y`,
`bicubic/lpips`; its diversity score is 0 by definition), so every row of an SR
table sits next to its trivial baseline. LPIPS to the ground truth itself is the
`lpips` evaluator's (`lpips_mean`, `lpips_best`).
"""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from multimodal_jax.evaluation import metrics
from multimodal_jax.evaluation.evaluators import base
from multimodal_jax.models import registry as models_registry

MAX_PSNR = 100.0
# ITU-R BT.601 luma of RGB in [0, 1], scaled to [16, 235] (BasicSR's rgb2ycbcr, y_only).
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], np.float64)


def quantize(images: np.ndarray) -> np.ndarray:
  """Float images in [0, 1] -> uint8, rounded (what saving a PNG does)."""
  return np.round(np.clip(np.asarray(images, np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def psnr_255(a: np.ndarray, b: np.ndarray) -> float:
  """PSNR of two images on a 0-255 scale, capped at MAX_PSNR."""
  mse = np.mean(np.square(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
  return MAX_PSNR if mse == 0 else min(MAX_PSNR, float(10 * np.log10(255.0 ** 2 / mse)))


def lr_psnr_BxN(samples_u8_BxNxHxWx3: np.ndarray, y_u8_BxHxWx3: np.ndarray, degrade, factor: int) -> np.ndarray:
  """[B, N] LR-PSNR: each sample and its ground truth through `degrade`, compared on 0-255."""
  out = np.zeros(samples_u8_BxNxHxWx3.shape[:2])
  for i, (samples, y) in enumerate(zip(samples_u8_BxNxHxWx3, y_u8_BxHxWx3)):
    y_lr = degrade(y, factor)
    out[i] = [psnr_255(degrade(s, factor), y_lr) for s in samples]
  return out


def luma(images_u8: np.ndarray) -> np.ndarray:
  """uint8 RGB [..., 3] -> Y in [16, 235] (float64) [..., 1]."""
  return (np.asarray(images_u8, np.float64) / 255.0 @ _Y_WEIGHTS + 16.0)[..., None]


def y_channel_quality(samples_u8_BxNxHxWx3: np.ndarray, y_u8_BxHxWx3: np.ndarray, border: int) -> base.Scalars:
  """PSNR / SSIM on Y with `border` pixels cropped (BasicSR): best of N and mean over N, averaged over inputs."""
  crop = (slice(None),) * (samples_u8_BxNxHxWx3.ndim - 3) + (slice(border, -border or None),) * 2
  s = jnp.asarray(luma(samples_u8_BxNxHxWx3)[crop], jnp.float32)
  y = jnp.asarray(luma(y_u8_BxHxWx3)[crop[1:]], jnp.float32)
  psnr_BxN = jax.vmap(lambda a, b: jax.vmap(lambda ai: _psnr(ai, b))(a))(s, y)
  ssim_BxN = jax.vmap(lambda a, b: jax.vmap(lambda ai: _ssim(ai, b))(a))(s, y)
  return {"psnr_y_best": float(jnp.mean(jnp.max(psnr_BxN, axis=1))),
          "psnr_y_mean": float(jnp.mean(psnr_BxN)),
          "ssim_y_best": float(jnp.mean(jnp.max(ssim_BxN, axis=1))),
          "ssim_y_mean": float(jnp.mean(ssim_BxN))}


def _psnr(a, b):
  return 10 * jnp.log10(255.0 ** 2 / jnp.maximum(jnp.mean(jnp.square(a - b)), 1e-10))


def _ssim(a, b):
  return dm_pix.ssim(a, b, max_val=255.0)


def diversity_score(maps_BxNxHxW: np.ndarray) -> float:
  """NTIRE'21's diversity score, averaged over inputs (module docstring)."""
  global_best_B = np.min(np.mean(maps_BxNxHxW, axis=(2, 3)), axis=1)
  local_best_B = np.mean(np.min(maps_BxNxHxW, axis=1), axis=(1, 2))
  return float(np.mean((global_best_B - local_best_B) / global_best_B * 100.0))


@jax.jit
def _spatial_maps(distance, samples_BxNxHxWx3: jax.Array, y_BxHxWx3: jax.Array) -> jax.Array:
  """[B, N, H, W] spatial distance maps of each sample to its ground truth, one input at a time."""
  return jax.lax.map(lambda args: distance.spatial_map(args[0], args[1][None]), (samples_BxNxHxWx3, y_BxHxWx3))


def compute(ctx: base.Context) -> base.Scalars:
  x, y = ctx.batch["x"], ctx.batch["y"]
  factor = y.shape[1] // x.shape[1]
  ctx.info["sr_scale"] = factor
  samples_u8, y_u8 = quantize(ctx.samples), quantize(y)
  bicubic_u8 = quantize(models_registry.upsample_reference(jnp.asarray(x), factor, metrics.REFERENCE_UPSAMPLING))
  out = y_channel_quality(samples_u8, y_u8, factor)
  ref = y_channel_quality(bicubic_u8[:, None], y_u8, factor)
  out.update({f"bicubic/{k[:-5]}": v for k, v in ref.items() if k.endswith("_mean")})
  degrade = ctx.dataset_spec().degrade
  if degrade is None:
    ctx.skip("lr_psnr", f"dataset {ctx.config.data.name!r} declares no `degrade` (how its inputs were made)")
  else:
    lr_psnr = lr_psnr_BxN(samples_u8, y_u8, degrade, factor)
    out.update(lr_psnr_mean=float(np.mean(lr_psnr)), lr_psnr_worst=float(np.mean(np.min(lr_psnr, axis=1))))
    out["bicubic/lr_psnr"] = float(np.mean(lr_psnr_BxN(bicubic_u8[:, None], y_u8, degrade, factor)))
  distance = ctx.distance(base.LPIPS)
  if distance is None:
    ctx.skip("sr_diversity_score", base.MISSING_LPIPS)
    return out
  maps = np.asarray(_spatial_maps(distance, samples_u8 / np.float32(255), y_u8 / np.float32(255)))
  out["sr_diversity_score"] = diversity_score(maps)
  bicubic_maps = np.asarray(_spatial_maps(distance, bicubic_u8[:, None] / np.float32(255), y_u8 / np.float32(255)))
  out["bicubic/lpips"] = float(np.mean(bicubic_maps))
  return out


def summarize(m: base.Scalars, header: dict) -> list[str]:
  if "psnr_y_mean" not in m:
    return []
  lines = [f"  SR protocol (NTIRE'21, 8-bit samples)  "
           + (f"LR-PSNR mean/worst {m['lr_psnr_mean']:.2f}/{m['lr_psnr_worst']:.2f} dB (target 45; bicubic "
              f"{m['bicubic/lr_psnr']:.2f}); " if "lr_psnr_mean" in m else "")
           + (f"diversity score {m['sr_diversity_score']:.2f} (bicubic 0; LPIPS of bicubic "
              f"{m['bicubic/lpips']:.3f})" if "sr_diversity_score" in m else "no diversity score (no LPIPS)")]
  lines.append(f"    Y channel, {header.get('sr_scale', '?')}-px border cropped: PSNR best/mean {m['psnr_y_best']:.2f}/{m['psnr_y_mean']:.2f} dB, "
               f"SSIM best/mean {m['ssim_y_best']:.4f}/{m['ssim_y_mean']:.4f}; bicubic {m['bicubic/psnr_y']:.2f} dB, "
               f"{m['bicubic/ssim_y']:.4f}")
  return lines


SR_PROTOCOL = base.Evaluator("sr_protocol", compute, summarize, needs=("super_resolution", "rgb_images"))
