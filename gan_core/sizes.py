"""Image sides: the ones the conv nets build (NATIVE_SIZES, the one list of them), the ones a user may ask
for (ACCEPTED_SIZES), and how one maps to the other. No torch here, so the CLI's help can read it cheaply."""
from __future__ import annotations

# The sides the generators, discriminators and the Classifier build. 28 is MNIST's own.
NATIVE_SIZES = (8, 16, 28, 32, 64)
# data.image_size may be any side in this range: one the nets do not build is resized to native_size(side).
ACCEPTED_SIZES = (8, 256)
ACCEPTED_SIZES_TEXT = (f"an image side must be from {ACCEPTED_SIZES[0]} to {ACCEPTED_SIZES[1]} px (the models build "
                       f"{', '.join(map(str, NATIVE_SIZES))}; another side is resized to the nearest of those)")


def base_side(size: int) -> tuple[int, int]:
    """(base side, resamples) of a native size: both nets work on a small square base map and each stride-2
    block doubles (G) / halves (D) its side. The base is the size halved until it is below 8: 8, 16, 32 and
    64 have a 4x4 base (1 to 4 resamples, the layout every earlier checkpoint has), 28 a 7x7 one (28 -> 14 -> 7)."""
    if size not in NATIVE_SIZES:
        raise ValueError(f"image side {size} is not one the models build {NATIVE_SIZES}")
    side, k = size, 0
    while side >= 8:
        side, k = side // 2, k + 1
    return side, k


def native_size(size: int) -> int:
    """The native size images of side `size` are prepared at: `size` itself when native, else the nearest
    native size, a tie going to the larger (12 -> 16, 22 -> 28, 48 -> 64: upscaling keeps every source pixel).
    Above 64 that is 64. Raises ValueError outside ACCEPTED_SIZES."""
    if isinstance(size, bool) or not isinstance(size, int) or not ACCEPTED_SIZES[0] <= size <= ACCEPTED_SIZES[1]:
        raise ValueError(f"{ACCEPTED_SIZES_TEXT}, got {size!r}")
    return min(NATIVE_SIZES, key=lambda n: (abs(n - size), -n))
