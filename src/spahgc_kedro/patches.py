"""Square H&E patches centred on spot centres, read window by window from the section image.

Geometry: a patch of side `s` px puts the spot centre pixel `(floor(x), floor(y))` at
patch index `(s // 2, s // 2)`, so it spans columns `floor(x) - s // 2` to
`floor(x) - s // 2 + s - 1`. Parts outside the image are filled with `pad_value`
(255, white, by default: the colour of glass in brightfield H&E), so border spots keep
their centre and are never dropped or shifted.

Tiled/pyramidal TIFFs (HEST WSIs, Visium full-res) are read lazily through tifffile's
zarr store, level 0, decoding only the tiles a window touches. JPEG/PNG (legacy ST) are
decoded once per section; DataLoader workers share that array copy-on-write.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .readers.common import InputDataError

TIFF_SUFFIXES = {".tif", ".tiff", ".svs", ".btf", ".ndpi", ".scn"}


def _as_rgb_uint8(pixels: np.ndarray) -> np.ndarray:
    """HxW, HxWx1, HxWx3 or HxWx4 pixels of any integer depth as HxWx3 uint8."""
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    return pixels[..., :3]


class TiffImage:
    """Level 0 of a (tiled, pyramidal) TIFF, read region by region through a zarr store."""

    def __init__(self, path: Path) -> None:
        import tifffile
        import zarr

        self.path = path
        try:
            self._tif = tifffile.TiffFile(path)
            level = self._tif.series[0].levels[0]
            self._axes = level.axes
            self._array = zarr.open(self._tif.aszarr(series=0, level=0), mode="r")
        except Exception as err:  # noqa: BLE001 - tifffile/zarr raise many types for a bad file
            raise InputDataError(
                f"Cannot open TIFF image '{path}': {err}. The file is unreadable or truncated: "
                "re-download or re-export it."
            ) from err
        shape = dict(zip(self._axes, level.shape, strict=True))
        self.size = (int(shape["X"]), int(shape["Y"]))

    def read(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Pixels of the window [y0:y1, x0:x1] (inside the image) as HxWx3 uint8."""
        index: list[Any] = []
        for axis in self._axes:
            # channels are kept whole; any other extra axis (time, z, pages) takes its first plane
            index.append(
                slice(y0, y1) if axis == "Y" else slice(x0, x1) if axis == "X" else slice(None) if axis in "SC" else 0
            )
        try:
            window = np.asarray(self._array[tuple(index)])
        except Exception as err:  # noqa: BLE001 - codec errors on damaged tiles vary by compression
            raise InputDataError(
                f"Cannot decode pixels ({x0}:{x1}, {y0}:{y1}) of '{self.path}': {err}. The file is "
                "truncated or damaged: re-download or re-export it."
            ) from err
        kept = [a for a in self._axes if a in "YXSC"]
        if "S" not in kept and "C" in kept and kept.index("C") < kept.index("Y"):
            window = np.moveaxis(window, kept.index("C"), -1)
        elif "S" in kept and kept.index("S") < kept.index("Y"):
            window = np.moveaxis(window, kept.index("S"), -1)
        return _as_rgb_uint8(window)

    def close(self) -> None:
        """Release the file handle."""
        self._tif.close()


class DecodedImage:
    """A JPEG/PNG (or any PIL-readable image) decoded once into memory."""

    def __init__(self, path: Path) -> None:
        from PIL import Image

        # legacy ST images exceed PIL's decompression-bomb guard by design
        Image.MAX_IMAGE_PIXELS = None
        self.path = path
        try:
            with Image.open(path) as img:
                self._pixels = _as_rgb_uint8(np.asarray(img.convert("RGB")))
        except (OSError, SyntaxError, ValueError) as err:
            raise InputDataError(
                f"Cannot decode image '{path}': {err}. The file is unreadable or truncated: "
                "re-download or re-export it."
            ) from err
        self.size = (self._pixels.shape[1], self._pixels.shape[0])

    def read(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Pixels of the window [y0:y1, x0:x1] (inside the image) as HxWx3 uint8."""
        return self._pixels[y0:y1, x0:x1]

    def close(self) -> None:
        """Nothing to release: the pixels live in memory."""


def open_image(path: str | Path) -> TiffImage | DecodedImage:
    """Open a section image: lazily for TIFFs, fully decoded otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(
            f"Image '{path}' does not exist. Re-run the ingestion pipeline so that "
            "uns['image_path'] points to the section's full-resolution image."
        )
    return TiffImage(path) if path.suffix.lower() in TIFF_SUFFIXES else DecodedImage(path)


def read_patch(image: TiffImage | DecodedImage, centre: tuple[float, float], size: int, pad_value: int) -> np.ndarray:
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
    mpp = float(section_uns.get("microns_per_pixel", float("nan")))
    if not math.isfinite(mpp) or mpp <= 0:
        raise InputDataError(
            f"Section {section_uns.get('section_id', '?')}: patch_size_um is {microns} but the section has no "
            "microns_per_pixel. Use --params embedding.patch_size_um:null (patches in px), or give the "
            "dataset's scale to the reader."
        )
    return max(1, round(float(microns) / mpp))


def check_spots_inside(centres: np.ndarray, size: tuple[int, int], section_id: str, path: Path) -> None:
    """Fail when the image is smaller than the spot coordinates imply (wrong image or scale)."""
    width, height = size
    outside = (centres[:, 0] < 0) | (centres[:, 1] < 0) | (centres[:, 0] >= width) | (centres[:, 1] >= height)
    if outside.any():
        raise InputDataError(
            f"Section {section_id}: {int(outside.sum())} of {len(centres)} spot centres lie outside the "
            f"{width} x {height} px image '{path}' (max x {centres[:, 0].max():.0f}, max y "
            f"{centres[:, 1].max():.0f}). The image is smaller than the coordinates imply: point the "
            "section at its full-resolution image (not a downscaled one) and re-run ingestion."
        )


class SpotPatches:
    """Map-style dataset of one section's patches (uint8 HxWx3 at the encoder's input size).

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
    ) -> None:
        self.image_path = Path(image_path)
        self.centres = np.asarray(centres, dtype=np.float64)
        self.patch_px, self.output_px, self.pad_value = int(patch_px), int(output_px), int(pad_value)
        image = open_image(self.image_path)
        check_spots_inside(self.centres, image.size, section_id, self.image_path)
        if isinstance(image, TiffImage):
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
        return patch

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if isinstance(state["_image"], TiffImage):
            state["_image"] = None
        return state
