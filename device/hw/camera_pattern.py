"""The synthetic camera's picture: moving colour bars with the frame number drawn in.

For machines without a camera (the demo, tests, benchmarks measuring CPU on a Pi
Zero budget). Everything that stays the same from frame to frame is computed
once, so a frame costs one copy of the bars and a few small fills. The number is
drawn in a 3x5 pixel font scaled up until it survives JPEG, white on a black box
in the middle, and `read_frame_number` reads it back from a decoded frame, so a test
can tell frames apart by what is in the picture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Digits drawn (zero-padded): enough for a frame a second for eleven days.
DIGITS = 6

# 3 wide, 5 high, read row by row; every glyph differs from every other.
_FONT = (
    "111101101101111",  # 0
    "010110010010111",  # 1
    "111001111100111",  # 2
    "111001111001111",  # 3
    "101101111001001",  # 4
    "111100111001111",  # 5
    "111100111101111",  # 6
    "111001001001001",  # 7
    "111101111101111",  # 8
    "111101111001111",  # 9
)
_GLYPH_W, _GLYPH_H = 3, 5

# Classic colour bars (white, yellow, cyan, green, magenta, red, blue, black), RGB.
_BARS = np.array(
    [(235, 235, 235), (235, 235, 16), (16, 235, 235), (16, 235, 16),
     (235, 16, 235), (235, 16, 16), (16, 16, 235), (16, 16, 16)],
    dtype=np.uint8,
)


@dataclass(frozen=True)
class _Layout:
    """Where the number box and each font cell sit in a square frame of one size."""

    scale: int  # pixels per font cell
    top: int
    left: int
    width: int
    height: int

    @classmethod
    def for_size(cls, size: int) -> _Layout:
        scale = max(2, size // 48)
        width = (DIGITS * (_GLYPH_W + 1) + 1) * scale
        height = (_GLYPH_H + 2) * scale
        if width > size:
            raise ValueError(f"a {size}x{size} frame is too small for the frame number")
        return cls(scale, (size - height) // 2, (size - width) // 2, width, height)

    @property
    def box(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)

    def glyph_origin(self, digit: int) -> tuple[int, int]:
        """Top-left pixel of the `digit`-th glyph (0 = most significant)."""
        return self.top + self.scale, self.left + (1 + digit * (_GLYPH_W + 1)) * self.scale


class NumberedBars:
    """Draws frame `n`: the bars shifted n steps to the left, and n written in the middle."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._layout = _Layout.for_size(size)
        # Two cycles of bars side by side: any window `size` wide is one frame's row.
        columns = np.arange(2 * size) * len(_BARS) // size % len(_BARS)
        self._row = _BARS[columns]
        self._step = max(1, size // 32)
        cell = np.ones((self._layout.scale, self._layout.scale), dtype=bool)
        self._glyphs = [
            np.kron(np.array([c == "1" for c in bits]).reshape(_GLYPH_H, _GLYPH_W), cell)
            for bits in _FONT
        ]

    def draw(self, number: int) -> np.ndarray:
        """A fresh (size, size, 3) RGB frame showing `number` (modulo 10**DIGITS)."""
        shift = number * self._step % self.size
        frame = np.empty((self.size, self.size, 3), dtype=np.uint8)
        frame[:] = self._row[shift : shift + self.size]
        frame[self._layout.box] = 0
        for index, char in enumerate(f"{number % 10**DIGITS:0{DIGITS}d}"):
            glyph = self._glyphs[int(char)]
            y, x = self._layout.glyph_origin(index)
            frame[y : y + glyph.shape[0], x : x + glyph.shape[1]][glyph] = 255
        return frame


def read_frame_number(rgb: np.ndarray) -> int:
    """The number `NumberedBars.draw` put in this (decoded) frame; ValueError if there is none."""
    size = rgb.shape[0]
    if rgb.ndim != 3 or rgb.shape[1] != size:
        raise ValueError(f"expected a square RGB frame, got shape {rgb.shape}")
    layout = _Layout.for_size(size)
    scale, margin = layout.scale, layout.scale // 4  # read each cell's middle, not its edges
    digits = []
    for index in range(DIGITS):
        y0, x0 = layout.glyph_origin(index)
        bits = ""
        for row in range(_GLYPH_H):
            for col in range(_GLYPH_W):
                y, x = y0 + row * scale + margin, x0 + col * scale + margin
                cell = rgb[y : y + scale - 2 * margin, x : x + scale - 2 * margin]
                bits += "1" if cell.mean() > 128 else "0"
        if bits not in _FONT:
            raise ValueError(f"no frame number in this picture (digit {index + 1} reads {bits})")
        digits.append(str(_FONT.index(bits)))
    return int("".join(digits))
