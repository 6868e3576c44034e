"""Square H&E patches centred on spot centres, read window by window from the section image.

Geometry: a patch of side `s` px puts the spot centre pixel `(floor(x), floor(y))` at
patch index `(s // 2, s // 2)`, so it spans columns `floor(x) - s // 2` to
`floor(x) - s // 2 + s - 1`. Parts outside the image are filled with `pad_value`
(255, white, by default: the colour of glass in brightfield H&E), so border spots keep
their centre and are never dropped or shifted.

Images are read through `images.open_image` (TIFFs window by window, JPEG/PNG decoded
once per section; DataLoader workers share that array copy-on-write).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from spahgc_kedro.schema import Uns

from .errors import InputDataError
from .images import DecodedImage, TiffImage, ZarrImage, check_spots_inside, open_image


def read_patch(
    image: TiffImage | ZarrImage | DecodedImage, centre: tuple[float, float], size: int, pad_value: int
) -> np.ndarray:
    """The `size` x `size` RGB patch centred on `centre` = (x, y), padded outside the image."""
    width, height = image.size
    left, top = math.floor(centre[0]) - size // 2, math.floor(centre[1]) - size // 2
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + size, width), min(top + size, height)
    if x0 == left and y0 == top and x1 - x0 == size and y1 - y0 == size:
        # a writable copy: torch cannot wrap the read-only views of a decoded image
        return np.array(image.read(x0, y0, x1, y1))
    patch = np.full((size, size, 3), pad_value, dtype=np.uint8)
    if x1 > x0 and y1 > y0:
        patch[y0 - top : y1 - top, x0 - left : x1 - left] = image.read(x0, y0, x1, y1)
    return patch


def patch_size_px(section_uns: dict[str, Any], settings: dict[str, Any]) -> int:
    """Patch side in full-resolution px: `patch_size_um` converted with the section's scale, else `patch_size_px`."""
    microns = settings.get("patch_size_um")
    if microns is None:
        return int(settings["patch_size_px"])
    mpp = float(section_uns.get(Uns.MICRONS_PER_PIXEL, float("nan")))
    if not math.isfinite(mpp) or mpp <= 0:
        raise InputDataError(
            f"Section {section_uns.get('section_id', '?')}: patch_size_um is {microns} but the section has no "
            "microns_per_pixel. Use --params embedding.patch_size_um:null (patches in px), or give the "
            "dataset's scale to the reader."
        )
    return max(1, round(float(microns) / mpp))


class SpotPatches:
    """Map-style dataset of one section's patches (uint8 HxWx3 at the encoder's input size), as they are
    or as one of their 8 flips/rotations (`view`).

    TIFFs are opened lazily in each DataLoader worker (file handles do not survive fork/pickle);
    decoded images are decoded here once and shared with the workers.
    """

    def __init__(
        self,
        image_path: str | Path,
        centres: np.ndarray,
        *,
        patch_px: int,
        output_px: int,
        pad_value: int = 255,
        section_id: str = "?",
        view: int = 0,
    ) -> None:
        if not 0 <= view < 8:
            raise ValueError(f"view must be one of the 8 flips/rotations 0-7, got {view}")
        self.view = int(view)
        self.image_path = Path(image_path)
        self.centres = np.asarray(centres, dtype=np.float64)
        self.patch_px, self.output_px, self.pad_value = int(patch_px), int(output_px), int(pad_value)
        image = open_image(self.image_path)
        check_spots_inside(self.centres, image.size, section_id, self.image_path)
        if isinstance(image, (TiffImage, ZarrImage)):
            image.close()
            image = None
        self._image = image

    def __len__(self) -> int:
        return len(self.centres)

    def __getitem__(self, index: int) -> np.ndarray:
        if self._image is None:
            self._image = open_image(self.image_path)
        patch = read_patch(self._image, tuple(self.centres[index]), self.patch_px, self.pad_value)
        if self.patch_px != self.output_px:
            from PIL import Image

            patch = np.array(Image.fromarray(patch).resize((self.output_px, self.output_px), Image.Resampling.BILINEAR))
        if self.view:
            # the dihedral group of the square: rotation by view % 4 quarter turns, then a mirror for views 4-7
            patch = np.rot90(patch, self.view % 4)
            patch = np.ascontiguousarray(patch[:, ::-1] if self.view >= 4 else patch)
        return patch

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if isinstance(state["_image"], (TiffImage, ZarrImage)):
            state["_image"] = None
        return state
