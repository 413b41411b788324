"""Pixel windows: one small immutable type for every rectangle of pixels in the code.

A :class:`Window` is ``row``/``col`` of its top-left pixel and its ``height``/``width``, all
integers, in the pixels of whatever it is relative to (a tile, a block's read window, a patch).
Block read windows, block cores and patch cores are all Windows, so no module converts
``(row, col, h, w)`` or ``(r0, r1, c0, c1)`` tuples by hand.

Why not ``rasterio.windows.Window`` itself: its offsets and sizes may be floats, it is mutable
and its argument order is (col, row, width, height); the plan's arithmetic wants exact,
hashable integers. :meth:`Window.to_rasterio` converts at the one place a file is read or
written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, order=True)
class Window:
    """Rows ``[row, row + height)`` and columns ``[col, col + width)``, integer pixels."""

    row: int
    col: int
    height: int
    width: int

    def __post_init__(self) -> None:
        if self.height < 0 or self.width < 0:
            raise ValueError(f"window size must be >= 0, not {self.height}x{self.width}")

    @classmethod
    def from_bounds(cls, row0: int, row1: int, col0: int, col1: int) -> Window:
        """The window of rows [row0, row1) and columns [col0, col1)."""
        return cls(row0, col0, row1 - row0, col1 - col0)

    @property
    def row_stop(self) -> int:
        return self.row + self.height

    @property
    def col_stop(self) -> int:
        return self.col + self.width

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def pixels(self) -> int:
        return self.height * self.width

    def toslices(self) -> tuple[slice, slice]:
        """(row slice, col slice), e.g. ``array[window.toslices()]``."""
        return slice(self.row, self.row_stop), slice(self.col, self.col_stop)

    def relative_to(self, origin: Window) -> Window:
        """This window in the pixels of ``origin`` (whose top-left becomes (0, 0))."""
        return Window(self.row - origin.row, self.col - origin.col, self.height, self.width)

    def intersection(self, other: Window) -> Window | None:
        """The overlap of two windows, or None when they share no pixel."""
        r0, r1 = max(self.row, other.row), min(self.row_stop, other.row_stop)
        c0, c1 = max(self.col, other.col), min(self.col_stop, other.col_stop)
        if r0 >= r1 or c0 >= c1:
            return None
        return Window.from_bounds(r0, r1, c0, c1)

    def to_rasterio(self) -> Any:
        """The same pixels as a ``rasterio.windows.Window`` (col_off, row_off, width, height)."""
        from rasterio.windows import Window as RioWindow

        return RioWindow(self.col, self.row, self.width, self.height)


def read_mirrored(image: np.ndarray, window: Window) -> np.ndarray:
    """``window`` of an (H, W, ...) in-memory ``image``; parts past the image are mirrored in.

    The one mirror rule of the code base (``numpy.pad`` mode ``symmetric``): the windowed
    file read and the in-memory patch-and-stitch both use it, so padded pixels are identical.
    """
    inside = window.intersection(Window(0, 0, image.shape[0], image.shape[1]))
    if inside is None:
        raise ValueError(f"window {window} lies wholly outside the {image.shape[:2]} image")
    return mirror_pad(image[inside.toslices()], inside.relative_to(window), window.shape)


def mirror_pad(data: np.ndarray, placed: Window, shape: tuple[int, int], fill: Any = None) -> np.ndarray:
    """Pad (h, w, ...) ``data``, which sits at ``placed`` inside a window of ``shape``, to that shape.

    Without ``fill`` the padding mirrors the data (``symmetric``); with it, it is constant
    (e.g. ``False`` for a validity mask). No copy when nothing needs padding.
    """
    pad = ((placed.row, shape[0] - placed.row_stop), (placed.col, shape[1] - placed.col_stop))
    if not any(p for pair in pad for p in pair):
        return data
    full = pad + ((0, 0),) * (data.ndim - 2)
    if fill is None:
        return np.pad(data, full, mode="symmetric")
    return np.pad(data, full, mode="constant", constant_values=fill)
