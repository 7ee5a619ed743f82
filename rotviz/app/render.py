"""Fast on-page pictures (numpy, a few ms): maps on a shared colour scale, masks with box outlines.

The page redraws these on every threshold change, which must take <= 100 ms; a matplotlib
figure takes several times that, so it is built only for exports (rotviz.report.figures).
Colours match rotviz.report.figures: inferno maps, cyan mask, yellow boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps

from rotviz.scores.metrics import Threshold, goodness

MASK_RGB = np.array([0, 217, 255], dtype=np.float32)  # cyan, as figures._MASK_COLOUR
BOX_RGB = np.array([255, 212, 0], dtype=np.uint8)  # yellow, as figures._BOX_COLOUR
ZOOM = 3  # 128 px -> 384 px on the page, nearest neighbour (pixels stay visible)


def hwc(image: np.ndarray) -> np.ndarray:
    """(3, H, W) uint8 -> (H, W, 3) uint8."""
    return np.ascontiguousarray(np.asarray(image).transpose(1, 2, 0))


def zoom(img: np.ndarray, factor: int = ZOOM) -> np.ndarray:
    """Nearest-neighbour upscaling of (H, W, 3)."""
    return img.repeat(factor, axis=0).repeat(factor, axis=1)


def draw_boxes(img: np.ndarray, boxes: np.ndarray, scale: int = 1, width: int = 2) -> np.ndarray:
    """Outline boxes (K, 4) xyxy in pixels of the unscaled image on img (H*scale, W*scale, 3)."""
    out = img.copy()
    h, w = out.shape[:2]
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        c0, r0 = int(round(x0 * scale)), int(round(y0 * scale))
        c1, r1 = int(round(x1 * scale)) - 1, int(round(y1 * scale)) - 1
        c0, c1 = max(0, min(c0, w - 1)), max(0, min(c1, w - 1))
        r0, r1 = max(0, min(r0, h - 1)), max(0, min(r1, h - 1))
        out[r0 : r0 + width, c0 : c1 + 1] = BOX_RGB
        out[max(r1 - width + 1, 0) : r1 + 1, c0 : c1 + 1] = BOX_RGB
        out[r0 : r1 + 1, c0 : c0 + width] = BOX_RGB
        out[r0 : r1 + 1, max(c1 - width + 1, 0) : c1 + 1] = BOX_RGB
    return out


def colorize(saliency: np.ndarray, vmin: float, vmax: float, cmap: str = "inferno") -> np.ndarray:
    """A map (H, W) as (H, W, 3) uint8 on the colour scale [vmin, vmax]."""
    span = vmax - vmin if vmax > vmin else 1.0
    normed = np.clip((np.asarray(saliency, dtype=np.float64) - vmin) / span, 0.0, 1.0)
    return (colormaps[cmap](normed)[..., :3] * 255).astype(np.uint8)


def overlay(
    image: np.ndarray, saliency: np.ndarray, vmin: float, vmax: float, alpha: float = 0.6
) -> np.ndarray:
    """Map over image (H, W, 3) uint8 at opacity alpha, on the shared scale [vmin, vmax]."""
    heat = colorize(saliency, vmin, vmax).astype(np.float32)
    return (alpha * heat + (1 - alpha) * image.astype(np.float32)).astype(np.uint8)


def tint(image: np.ndarray, mask: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Thresholded map S_p (H, W) bool tinted cyan on the image, the rest dimmed."""
    out = image.astype(np.float32) * 0.55
    m = np.asarray(mask, dtype=bool)
    out[m] = (1 - alpha) * image[m].astype(np.float32) + alpha * MASK_RGB
    return out.astype(np.uint8)


def shared_scale(*maps: np.ndarray) -> tuple[float, float]:
    """(vmin, vmax) over all finite values of the maps, for one colour scale."""
    finite = np.concatenate([m[np.isfinite(m)].ravel() for m in maps])
    if not finite.size:
        return 0.0, 1.0
    return float(finite.min()), float(finite.max())


@dataclass
class ThresholdView:
    """What the page shows for one threshold: Q and the mask pictures of trained and random."""

    q_trained: float
    q_random: float
    fraction_trained: float  # share of pixels on in S_p
    fraction_random: float
    mask_trained: np.ndarray  # (H, W) bool
    mask_random: np.ndarray
    picture_trained: np.ndarray  # (H*ZOOM, W*ZOOM, 3) uint8, mask + box outlines
    picture_random: np.ndarray


def threshold_view(
    image: np.ndarray,
    boxes: np.ndarray,
    box_mask: np.ndarray,
    maps: tuple[np.ndarray, np.ndarray],
    threshold: Threshold,
) -> ThresholdView:
    """Threshold both maps, score them (Q; NaN without boxes) and draw the masks: the fast path."""
    img = hwc(image)
    masks, qs, pictures = [], [], []
    for s in maps:
        sp = threshold.mask(s, box_mask)
        masks.append(sp)
        qs.append(goodness(sp, box_mask))
        pictures.append(draw_boxes(zoom(tint(img, sp)), boxes, scale=ZOOM))
    return ThresholdView(
        qs[0],
        qs[1],
        float(masks[0].mean()),
        float(masks[1].mean()),
        masks[0],
        masks[1],
        pictures[0],
        pictures[1],
    )
