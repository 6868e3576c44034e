"""Section images: which files are images, their size, windowed reads, thumbnails.

Tiled/pyramidal TIFFs (HEST WSIs, Visium full-res, `.svs`/`.ndpi`/`.scn` slides) are read
lazily through tifffile's zarr store, decoding only the tiles a window touches; their size
comes from the header. JPEG/PNG (legacy ST) are decoded once. Whole-slide images exceed
PIL's decompression-bomb guard by design, so it is lifted for the files the user names.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputDataError

__all__ = [
    "IMAGE_SUFFIXES",
    "TIFF_SUFFIXES",
    "DecodedImage",
    "TiffImage",
    "check_spots_inside",
    "data_uri",
    "image_size",
    "is_image",
    "open_image",
    "read_thumbnail",
]

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".svs", ".ndpi", ".scn")
# search order when a folder holds several images of one section: full-resolution TIFFs first
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, ".jpg", ".jpeg", ".png")


def is_tiff(path: str | Path) -> bool:
    """Whether the file is read through tifffile (by suffix)."""
    return Path(path).suffix.lower() in TIFF_SUFFIXES


def is_image(path: str | Path) -> bool:
    """Whether the file is a section image this project reads (by suffix)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _pil() -> Any:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    return Image


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


def _channels_last(window: np.ndarray, axes: str) -> np.ndarray:
    """Move a sample/channel axis stored before Y to the end."""
    kept = [a for a in axes if a in "YXSC"]
    if "S" not in kept and "C" in kept and kept.index("C") < kept.index("Y"):
        return np.moveaxis(window, kept.index("C"), -1)
    if "S" in kept and kept.index("S") < kept.index("Y"):
        return np.moveaxis(window, kept.index("S"), -1)
    return window


def _level_size(level: Any) -> tuple[int, int]:
    return int(level.shape[level.axes.index("X")]), int(level.shape[level.axes.index("Y")])


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
        self.size = _level_size(level)

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
        return _as_rgb_uint8(_channels_last(window, self._axes))

    def close(self) -> None:
        """Release the file handle."""
        self._tif.close()


class DecodedImage:
    """A JPEG/PNG (or any PIL-readable image) decoded once into memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with _pil().open(path) as img:
                self._pixels = _as_rgb_uint8(np.asarray(img.convert("RGB")))
        except (OSError, SyntaxError, ValueError) as err:
            raise InputDataError(
                f"Cannot decode image '{path}': {err}. The file is unreadable or truncated: re-download or re-export it."
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
    return TiffImage(path) if is_tiff(path) else DecodedImage(path)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image from its header, without decoding pixels."""
    path = Path(path)
    try:
        if is_tiff(path):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                if tif.series:
                    return _level_size(tif.series[0].levels[0])
                page = tif.pages[0]
                return int(page.imagewidth), int(page.imagelength)
        with _pil().open(path) as img:
            return img.size
    except (OSError, ValueError, IndexError) as err:
        raise InputDataError(f"Cannot read image '{path}': {err}. Re-download or re-export it.") from err


def check_spots_inside(xy: np.ndarray, size: tuple[int, int], section_id: str, image: str | Path) -> None:
    """Fail when spot centres fall outside the image (a downscaled image, or the wrong one)."""
    width, height = size
    xy = np.asarray(xy, dtype=np.float64)
    outside = (xy[:, 0] < 0) | (xy[:, 1] < 0) | (xy[:, 0] >= width) | (xy[:, 1] >= height)
    if outside.any():
        raise InputDataError(
            f"Section {section_id}: {int(outside.sum())} of {len(xy)} spot centres lie outside the "
            f"{width} x {height} px image '{image}' (max x {xy[:, 0].max():.0f}, max y {xy[:, 1].max():.0f}). "
            "The image is smaller than the coordinates imply: use the full-resolution image the coordinates "
            "refer to (not a downscaled one) and re-run ingestion."
        )


def _tiff_thumbnail(path: Path, max_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Smallest TIFF pyramid level at least `max_side` wide (strided if the file has no pyramid)."""
    import tifffile
    import zarr

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        levels = series.levels
        full_size = _level_size(levels[0])
        large_enough = [i for i, level in enumerate(levels) if max(_level_size(level)) >= max_side]
        index = large_enough[-1] if large_enough else len(levels) - 1
        step = max(1, max(_level_size(levels[index])) // (2 * max_side))
        axes = levels[index].axes
        store = series.aszarr(level=index)
        try:
            # strided reads decode one chunk at a time, so memory stays bounded
            array = zarr.open(store, mode="r")[::step, ::step]
        finally:
            store.close()
    return _as_rgb_uint8(_channels_last(np.asarray(array), axes)), full_size


def read_thumbnail(path: str | Path, max_side: int = 1024) -> tuple[np.ndarray, tuple[int, int]]:
    """An RGB thumbnail (longer side <= max_side) and the full-resolution (width, height).

    Decoded downsampled: JPEG draft mode, the lowest useful TIFF pyramid level, strided
    reads of unpyramided TIFFs, because whole-slide images do not fit in memory.
    """
    path = Path(path)
    Image = _pil()
    if is_tiff(path):
        array, full_size = _tiff_thumbnail(path, max_side)
        image = Image.fromarray(array)
    else:
        image = Image.open(path)
        full_size = image.size
        image.draft("RGB", (max_side, max_side))
    image = image.convert("RGB")
    image.thumbnail((max_side, max_side))
    return np.asarray(image), full_size


def data_uri(array: np.ndarray, fmt: str = "JPEG", quality: int = 85) -> str:
    """A base64 data URI of an RGB array, for plotly layout images and HTML."""
    buffer = io.BytesIO()
    _pil().fromarray(array).save(buffer, format=fmt, quality=quality)
    mime = "jpeg" if fmt == "JPEG" else fmt.lower()
    return f"data:image/{mime};base64,{base64.b64encode(buffer.getvalue()).decode()}"
