"""Drawing primitives of the synthetic motion data set: object sprites, textured backgrounds, compositing.

Everything here is vectorised (numpy, OpenCV); colours are float32 in [0, 1]. Sprites are square canvases
holding a shape of diameter ``SPRITE_FILL * canvas_px`` centred on the canvas, stored as premultiplied
RGBA in a small image pyramid so that strongly minified frames are warped from a pre-filtered level.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SHAPES: tuple[str, ...] = ("disc", "ellipse", "square", "triangle", "star", "cross")
TEXTURES: tuple[str, ...] = ("stripes", "checker", "blobs", "gradient")

SPRITE_FILL = 0.9
"""Fraction of the sprite canvas covered by the shape's diameter."""

_SUPERSAMPLING = 4
_POLYGON_SHIFT_BITS = 4


@dataclass(frozen=True)
class SpritePyramid:
    """Premultiplied RGBA sprite levels: ``levels[l]`` is ``[C / 2**l, C / 2**l, 4] float32``."""

    levels: tuple[np.ndarray, ...]

    @property
    def shape_diameter_px(self) -> float:
        """Diameter of the shape on level 0, in canvas pixels."""
        return SPRITE_FILL * self.levels[0].shape[0]


def shape_polygon(shape: str, rng: np.random.Generator) -> np.ndarray:
    """Vertices ``[N, 2] float64`` of ``shape`` inside the unit disc (x right, y down).

    ``rng`` draws the shape's free parameters (ellipse aspect ratio, star depth).
    """
    if shape == "disc":
        angles = np.linspace(0.0, 2.0 * np.pi, 64, endpoint=False)
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if shape == "ellipse":
        angles = np.linspace(0.0, 2.0 * np.pi, 64, endpoint=False)
        aspect = rng.uniform(0.45, 0.75)
        return np.stack([np.cos(angles), aspect * np.sin(angles)], axis=1)
    if shape == "square":
        angles = np.deg2rad([45.0, 135.0, 225.0, 315.0])
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if shape == "triangle":
        angles = np.deg2rad([-90.0, 30.0, 150.0])
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if shape == "star":
        angles = np.linspace(-0.5 * np.pi, 1.5 * np.pi, 10, endpoint=False)
        radii = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.4, 0.55))
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    if shape == "cross":
        arm = 0.38
        quarter = np.array([[arm, -1.0], [arm, -arm], [1.0, -arm]])
        rotations = [
            np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) for a in np.arange(4) * np.pi / 2
        ]
        outline = np.concatenate([quarter @ rotation.T for rotation in rotations], axis=0)
        return outline / np.hypot(1.0, arm)
    raise ValueError(f"shape {shape!r} is not one of {SHAPES}")


def shape_alpha(polygon: np.ndarray, canvas_px: int) -> np.ndarray:
    """Anti-aliased coverage ``[C, C] float32`` in [0, 1] of a unit-disc ``polygon`` on a ``C`` canvas.

    The polygon is filled at 4x supersampling and area-averaged down to the canvas.
    """
    fine_px = canvas_px * _SUPERSAMPLING
    radius = 0.5 * SPRITE_FILL * fine_px
    centre = 0.5 * (fine_px - 1)
    vertices = np.rint((centre + radius * polygon) * (1 << _POLYGON_SHIFT_BITS)).astype(np.int32)
    fine = np.zeros((fine_px, fine_px), dtype=np.uint8)
    cv2.fillPoly(fine, [vertices], 255, lineType=cv2.LINE_8, shift=_POLYGON_SHIFT_BITS)
    coarse = cv2.resize(fine, (canvas_px, canvas_px), interpolation=cv2.INTER_AREA)
    return coarse.astype(np.float32) / 255.0


def texture_pattern(texture: str, canvas_px: int, rng: np.random.Generator) -> np.ndarray:
    """Mixing weights ``[C, C] float32`` in [0, 1] of a two-colour ``texture`` over the sprite canvas.

    Frequencies are per shape radius, so the pattern scales with the object.
    """
    coords = (np.arange(canvas_px, dtype=np.float32) + 0.5 - 0.5 * canvas_px) / (
        0.5 * SPRITE_FILL * canvas_px
    )
    u, v = np.meshgrid(coords, coords)
    angle = rng.uniform(0.0, np.pi)
    along = u * np.cos(angle) + v * np.sin(angle)
    if texture == "stripes":
        cycles = rng.uniform(0.9, 1.6)
        return (0.5 + 0.5 * np.sin(2.0 * np.pi * cycles * along + rng.uniform(0, 2 * np.pi))).astype(
            np.float32
        )
    if texture == "checker":
        across = -u * np.sin(angle) + v * np.cos(angle)
        cells = rng.uniform(1.2, 2.0)
        product = np.sin(np.pi * cells * along) * np.sin(np.pi * cells * across)
        return (0.5 + 0.5 * np.tanh(4.0 * product)).astype(np.float32)
    if texture == "blobs":
        grid = rng.random((4, 4)).astype(np.float32)
        field = cv2.resize(grid, (canvas_px, canvas_px), interpolation=cv2.INTER_CUBIC)
        return _rescale_unit(field)
    if texture == "gradient":
        return np.clip(0.5 + 0.5 * along, 0.0, 1.0).astype(np.float32)
    raise ValueError(f"texture {texture!r} is not one of {TEXTURES}")


def sprite_pyramid(
    alpha: np.ndarray, pattern: np.ndarray, colours: np.ndarray, n_levels: int
) -> SpritePyramid:
    """Premultiplied RGBA pyramid of a sprite.

    Args:
        alpha: ``[C, C] float32`` coverage in [0, 1].
        pattern: ``[C, C] float32`` mixing weight in [0, 1] between the two colours.
        colours: ``[2, 3] float32`` RGB colours in [0, 1].
        n_levels: number of pyramid levels (each halves the canvas).
    """
    rgb = colours[0] + pattern[..., None] * (colours[1] - colours[0])
    level = np.concatenate([rgb * alpha[..., None], alpha[..., None]], axis=2).astype(np.float32)
    levels = [level]
    for _ in range(n_levels - 1):
        level = cv2.pyrDown(level)
        levels.append(level)
    return SpritePyramid(levels=tuple(levels))


def warp_sprite(
    sprite: SpritePyramid,
    centre_xy: np.ndarray,
    diameter_px: float,
    angle_rad: float,
    frame_hw: tuple[int, int],
) -> np.ndarray:
    """Place ``sprite`` in a frame: premultiplied RGBA ``[H, W, 4] float32``.

    The shape's centre lands on ``centre_xy`` (pixel coordinates, x right, y down), its diameter becomes
    ``diameter_px`` and it is turned by ``angle_rad``; a growing angle turns it clockwise on screen.
    The warp reads the finest pyramid level that still minifies, so it never samples below Nyquist by
    more than a factor of two.
    """
    level_index = int(
        np.clip(np.floor(np.log2(sprite.shape_diameter_px / diameter_px)), 0, len(sprite.levels) - 1)
    )
    level = sprite.levels[level_index]
    level_centre = 0.5 * (sprite.levels[0].shape[0] - 1) / 2**level_index
    scale = diameter_px / (sprite.shape_diameter_px / 2**level_index)
    rotation = scale * np.array(
        [[np.cos(angle_rad), -np.sin(angle_rad)], [np.sin(angle_rad), np.cos(angle_rad)]], dtype=np.float64
    )
    translation = np.asarray(centre_xy, dtype=np.float64) - rotation @ np.array([level_centre, level_centre])
    affine = np.concatenate([rotation, translation[:, None]], axis=1)
    height, width = frame_hw
    return cv2.warpAffine(
        level, affine, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def background_texture(
    height: int, width: int, colours: np.ndarray, contrast: float, rng: np.random.Generator
) -> np.ndarray:
    """Cluttered background ``[height, width, 3] float32`` in [0, 1].

    Two multi-octave value-noise fields (cells of 16, 8 and 4 px) mix ``colours`` (``[2, 3]``) and modulate
    brightness; ``contrast`` then scales every pixel's deviation from the mean colour (1 keeps it, 0 gives
    a flat background).
    """
    mix = _value_noise(height, width, rng)
    shade = _value_noise(height, width, rng)
    rgb = colours[0] + mix[..., None] * (colours[1] - colours[0])
    rgb = rgb * (0.75 + 0.5 * shade[..., None])
    mean = rgb.mean(axis=(0, 1), keepdims=True)
    return np.clip(mean + contrast * (rgb - mean), 0.0, 1.0).astype(np.float32)


def crop_background(background: np.ndarray, offset_xy: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """Frame-sized window ``[H, W, 3] float32`` of ``background`` whose top-left pixel sits at ``offset_xy``.

    Offsets are sub-pixel (bilinear); frame pixel (x, y) shows background pixel (x + ox, y + oy).
    """
    height, width = frame_hw
    affine = np.array([[1.0, 0.0, offset_xy[0]], [0.0, 1.0, offset_xy[1]]], dtype=np.float64)
    return cv2.warpAffine(
        background,
        affine,
        (width, height),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )


def composite(background: np.ndarray, sprite_rgba: np.ndarray) -> np.ndarray:
    """Alpha-blend a premultiplied ``[H, W, 4]`` sprite layer over a ``[H, W, 3]`` background (float32)."""
    return background * (1.0 - sprite_rgba[..., 3:]) + sprite_rgba[..., :3]


def _value_noise(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of bicubically upsampled random grids, rescaled to ``[height, width] float32`` in [0, 1]."""
    field = np.zeros((height, width), dtype=np.float32)
    for cell_px, weight in ((16, 0.5), (8, 0.3), (4, 0.2)):
        grid = rng.random((height // cell_px + 2, width // cell_px + 2)).astype(np.float32)
        field += weight * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    return _rescale_unit(field)


def _rescale_unit(field: np.ndarray) -> np.ndarray:
    low, high = float(field.min()), float(field.max())
    return ((field - low) / max(high - low, 1e-6)).astype(np.float32)
