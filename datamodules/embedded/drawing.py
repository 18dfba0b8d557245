"""Vectorised numpy drawing of textured shapes, shared by the image generators.

A shape lives in its own frame ``(u, v)``: the object spans about ``[-1, 1]²`` there, so
position, size and rotation are one affine map from pixel coordinates. Shapes are
boolean functions of ``(u, v)``; textures are intensities in ``[0, 1]`` of the same
coordinates, so they turn and scale with the object, as the surface of a real object does.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

__all__ = ["SHAPES", "TEXTURES", "add_noise", "background", "downsample", "hsv", "paint_shape", "to_uint8"]

SHAPES = ("disc", "square", "triangle", "star", "cross", "ring", "hexagon", "crescent", "ellipse", "arrow")
TEXTURES = ("solid", "stripes", "checker", "dots", "rings", "diagonal", "grid", "gradient", "speckle", "waves")


def _regular_polygon(r: np.ndarray, theta: np.ndarray, sides: int, radius: float) -> np.ndarray:
    sector = 2 * np.pi / sides
    return r * np.cos(np.mod(theta, sector) - sector / 2) < radius * np.cos(sector / 2)


def shape_mask(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of shape ``kind`` in object coordinates (extent about ``[-1, 1]``)."""
    r = np.hypot(u, v)
    theta = np.arctan2(v, u)
    if kind == "disc":
        return r < 0.95
    if kind == "square":
        return np.maximum(np.abs(u), np.abs(v)) < 0.72
    if kind == "triangle":
        return _regular_polygon(r, theta + np.pi / 2, 3, 1.0)
    if kind == "star":
        return r < 0.38 + 0.6 * (0.5 + 0.5 * np.cos(5 * theta)) ** 3
    if kind == "cross":
        return ((np.abs(u) < 0.28) & (np.abs(v) < 0.95)) | ((np.abs(v) < 0.28) & (np.abs(u) < 0.95))
    if kind == "ring":
        return (r > 0.55) & (r < 0.95)
    if kind == "hexagon":
        return _regular_polygon(r, theta, 6, 0.92)
    if kind == "crescent":
        return (r < 0.95) & (np.hypot(u - 0.45, v) > 0.72)
    if kind == "ellipse":
        return (u / 0.97) ** 2 + (v / 0.45) ** 2 < 1
    if kind == "arrow":
        shaft = (np.abs(v) < 0.2) & (u > -0.95) & (u < 0.15)
        head = (u >= 0.05) & (u < 0.95) & (np.abs(v) < (0.95 - u) * 0.85)
        return shaft | head
    raise ValueError(f"unknown shape {kind!r} (valid: {', '.join(SHAPES)})")


def texture(kind: str, u: np.ndarray, v: np.ndarray, freq: float, phase: float, rng: np.random.Generator) -> np.ndarray:
    """Texture intensity in ``[0, 1]`` at object coordinates ``(u, v)``."""
    if kind == "solid":
        return np.zeros_like(u)
    if kind == "stripes":
        return (np.sin(freq * u + phase) > 0).astype(np.float32)
    if kind == "checker":
        return (np.sin(freq * u + phase) * np.sin(freq * v + phase) > 0).astype(np.float32)
    if kind == "dots":
        return (np.cos(freq * u + phase) * np.cos(freq * v + phase) > 0.45).astype(np.float32)
    if kind == "rings":
        return (np.sin(freq * np.hypot(u, v) + phase) > 0).astype(np.float32)
    if kind == "diagonal":
        return (np.sin(freq * (u + v) * 0.7071 + phase) > 0.3).astype(np.float32)
    if kind == "grid":
        return (np.minimum(np.abs(np.sin(freq * u + phase)), np.abs(np.sin(freq * v + phase))) < 0.3).astype(np.float32)
    if kind == "gradient":
        return np.clip((u + 1) / 2, 0, 1).astype(np.float32)
    if kind == "speckle":
        return (rng.random(u.shape) < 0.35).astype(np.float32)
    if kind == "waves":
        return (np.sin(freq * u + 2.0 * np.sin(0.6 * freq * v) + phase) > 0).astype(np.float32)
    raise ValueError(f"unknown texture {kind!r} (valid: {', '.join(TEXTURES)})")


def hsv(h: float, s: float, v: float) -> np.ndarray:
    """RGB float32 triple in ``[0, 1]`` from hue (wraps), saturation and value."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))), np.float32)


def background(height: int, width: int, rng: np.random.Generator, saturation: float = 0.35) -> np.ndarray:
    """A smooth two-colour gradient with low-frequency blotches (no pixel noise).

    Args:
        height, width: canvas size in pixels.
        rng: random source.
        saturation: upper bound of the colours' saturation.

    Returns:
        float32 ``[height, width, 3]`` in ``[0, 1]``.
    """
    c0 = hsv(rng.random(), rng.uniform(0, saturation), rng.uniform(0.3, 0.9))
    c1 = hsv(rng.random(), rng.uniform(0, saturation), rng.uniform(0.3, 0.9))
    angle = rng.uniform(0, 2 * np.pi)
    # Everything is smooth, so it is built on a 6x6 grid and upsampled in one resize:
    # bicubic interpolation keeps the linear ramp and turns the noise into blotches.
    grid = np.linspace(-1, 1, 6, dtype=np.float32)
    ramp = ((np.cos(angle) * grid[None, :] + np.sin(angle) * grid[:, None] + 2) / 4)[..., None]
    coarse = c0 * (1 - ramp) + c1 * ramp + rng.normal(0, 0.08, (6, 6, 3)).astype(np.float32)
    return np.clip(cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``image`` plus white Gaussian noise of std ``sigma``, clipped to ``[0, 1]``."""
    noise = rng.standard_normal(image.shape, dtype=np.float32) * sigma
    return np.clip(image + noise, 0, 1)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float ``[0, 1]`` image to uint8 with rounding."""
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def paint_shape(
    canvas: np.ndarray,
    *,
    center: tuple[float, float],
    radius: float,
    angle: float,
    shape: str,
    texture_kind: str,
    colors: tuple[np.ndarray, np.ndarray],
    freq: float,
    phase: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Paint one textured shape onto ``canvas`` in place.

    Args:
        canvas: float32 ``[H, W, 3]`` image.
        center: ``(x, y)`` in pixels.
        radius: half-extent of the shape in pixels.
        angle: rotation in radians.
        shape: one of :data:`SHAPES`.
        texture_kind: one of :data:`TEXTURES`.
        colors: the two colours the texture mixes.
        freq, phase: texture frequency (radians per object unit) and phase.
        rng: random source (speckle texture).

    Returns:
        Boolean ``[H, W]`` mask of the painted pixels.
    """
    height, width = canvas.shape[:2]
    cx, cy = center
    x0, x1 = max(int(cx - radius) - 1, 0), min(int(cx + radius) + 2, width)
    y0, y1 = max(int(cy - radius) - 1, 0), min(int(cy + radius) + 2, height)
    full = np.zeros((height, width), bool)
    if x0 >= x1 or y0 >= y1:
        return full
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = (xx + 0.5 - cx) / radius, (yy + 0.5 - cy) / radius
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    mask = shape_mask(shape, u, v)
    t = texture(texture_kind, u, v, freq, phase, rng)[..., None]
    paint = colors[0] * (1 - t) + colors[1] * t
    region = canvas[y0:y1, x0:x1]
    region[mask] = paint[mask]
    full[y0:y1, x0:x1] = mask
    return full


def downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter downsampling by an integer factor (antialiasing of supersampled drawings)."""
    height, width = image.shape[0] // factor, image.shape[1] // factor
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
