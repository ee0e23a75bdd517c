"""Frame preprocessing shared by training and the edge runtime. Pure numpy + OpenCV, no torch.

The evaluation pipeline of the method (docs/method.md §1.2, val/test) is torchvision's
``Resize((S, S))`` (aspect ratio NOT kept) -> ``ToTensor`` -> ``Normalize(ImageNet)``.
:func:`preprocess_frame` is that pipeline on an RGB uint8 array, and it is the one function
both the training data sets and the edge library call, so the model sees byte-identical input
in training, evaluation and deployment.

    >>> import numpy as np
    >>> x = preprocess_frame(np.zeros((480, 640, 3), np.uint8), 224)
    >>> x.shape, x.dtype
    ((3, 224, 224), dtype('float32'))
"""

from __future__ import annotations

import cv2
import numpy as np
from .errors import UserError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(3, 1, 1)
_STD = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(3, 1, 1)
# (3, 256) float32: channel c, byte v -> (v / 255 - mean_c) / std_c, computed with the very float32
# operations of ToTensor + Normalize, so a table lookup gives the same bits as the arithmetic.
_LUT = (np.arange(256, dtype=np.float32)[None, :] / np.float32(255.0) - _MEAN[:, :, 0]) / _STD[:, :, 0]


class PreprocessError(UserError, ValueError):
    """A frame that cannot be turned into a model input."""


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise PreprocessError(f"frames must be (H, W, 3) uint8 RGB, got shape {a.shape} dtype {a.dtype}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise PreprocessError(f"frame has an empty side: shape {a.shape}")
    return a


def resize_rgb(rgb: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image to ``size`` x ``size`` (or (height, width)) without keeping
    the aspect ratio. Shrinking uses area averaging (anti-aliased, like PIL's resize that
    torchvision uses); enlarging uses bilinear interpolation."""
    a = _check_rgb(rgb)
    h_out, w_out = (size, size) if isinstance(size, int) else size
    if h_out <= 0 or w_out <= 0:
        raise PreprocessError(f"size must be positive, got {size}")
    h, w = a.shape[:2]
    if (h, w) == (h_out, w_out):
        return a
    interp = cv2.INTER_AREA if (h_out <= h and w_out <= w) else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(a), (w_out, h_out), interpolation=interp)


def normalize_chw(rgb: np.ndarray, *, bgr: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32: ``ToTensor`` (/255) then ImageNet ``Normalize``.

    One table lookup per pixel and channel, written straight into the channel-first result (no
    float temporaries): the same bits as ``(x / 255 - mean) / std`` in float32. ``bgr=True`` reads
    an OpenCV BGR image (the channel swap costs nothing); ``out`` is an optional (3, H, W) float32
    C-contiguous array to fill (reused across frames) and is returned.
    """
    a = _check_rgb(rgb)
    h, w = a.shape[:2]
    if out is None:
        out = np.empty((3, h, w), np.float32)
    elif out.shape != (3, h, w) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise PreprocessError(f"out must be a C-contiguous (3, {h}, {w}) float32 array, got {out.shape} {out.dtype}")
    for c in range(3):
        np.take(_LUT[c], a[:, :, 2 - c if bgr else c], out=out[c])
    return out


def preprocess_frame(rgb_uint8: np.ndarray, size: int = 224) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, size, size) float32 model input (resize, /255, ImageNet norm)."""
    return normalize_chw(resize_rgb(rgb_uint8, size))


def denormalize_chw(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`normalize_chw` for display: (3, H, W) float -> (H, W, 3) uint8 RGB."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 3 or a.shape[0] != 3:
        raise PreprocessError(f"expected a (3, H, W) array, got shape {a.shape}")
    rgb = (a * _STD + _MEAN) * 255.0
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).transpose(1, 2, 0)
