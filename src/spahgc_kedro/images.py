"""Section images: which files are images, their size, windowed reads, thumbnails.

Tiled/pyramidal TIFFs (HEST WSIs, Visium full-res, `.svs`/`.ndpi`/`.scn` slides) are read
lazily through tifffile's zarr store, decoding only the tiles a window touches; their size
comes from the header. OME-Zarr multiscale images (a SpatialData store's `images/<name>`)
are read the same way from their level 0. JPEG/PNG (legacy ST) are decoded once. Whole-slide images exceed
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
    "ZarrImage",
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


def multiscales(path: str | Path) -> dict[str, Any] | None:
    """The OME-NGFF `multiscales` entry of a zarr group folder (NGFF 0.4 in zarr v2, 0.5 in v3), else None."""
    path = Path(path)
    if not path.is_dir() or not ((path / "zarr.json").is_file() or (path / ".zattrs").is_file()):
        return None
    import zarr

    try:
        attrs = dict(zarr.open_group(path, mode="r").attrs)
    except Exception:  # noqa: BLE001 - a folder that is not a readable zarr group is not an image
        return None
    found = attrs.get("ome", attrs).get("multiscales")
    return found[0] if found else None


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


def _read_window(array: Any, axes: str, path: Path, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Pixels of the window [y0:y1, x0:x1] of an array whose axes are named by `axes` (e.g. YXS, CYX), as HxWx3."""
    index: list[Any] = []
    for axis in axes:
        # channels are kept whole; any other extra axis (time, z, pages) takes its first plane
        index.append(
            slice(y0, y1) if axis == "Y" else slice(x0, x1) if axis == "X" else slice(None) if axis in "SC" else 0
        )
    try:
        window = np.asarray(array[tuple(index)])
    except Exception as err:  # noqa: BLE001 - codec errors on damaged tiles vary by compression
        raise InputDataError(
            f"Cannot decode pixels ({x0}:{x1}, {y0}:{y1}) of '{path}': {err}. The file is "
            "truncated or damaged: re-download or re-export it."
        ) from err
    return _as_rgb_uint8(_channels_last(window, axes))


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
        return _read_window(self._array, self._axes, self.path, x0, y0, x1, y1)

    def close(self) -> None:
        """Release the file handle."""
        self._tif.close()


def _ngff_axes(entry: dict[str, Any]) -> str:
    """NGFF axes (`[{"name": "c"}, ...]`, or names in NGFF 0.3) as this module's letters: c -> C, y -> Y, x -> X."""
    names = [axis["name"] if isinstance(axis, dict) else axis for axis in entry["axes"]]
    return "".join(name.upper() if name in "cyx" else "T" for name in names)


class ZarrImage:
    """Level 0 of an OME-Zarr multiscale image (a SpatialData store's `images/<name>` folder), read by window."""

    def __init__(self, path: Path) -> None:
        import zarr

        self.path = path
        entry = multiscales(path)
        if entry is None:
            raise InputDataError(
                f"'{path}' is not an OME-Zarr image (no multiscales metadata). Point to a SpatialData store's "
                "images/<name> folder."
            )
        self._axes = _ngff_axes(entry)
        self._levels = [zarr.open_array(path / level["path"], mode="r") for level in entry["datasets"]]
        self._array = self._levels[0]
        self.size = _zarr_size(self._array, self._axes)

    def read(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Pixels of the window [y0:y1, x0:x1] (inside the image) as HxWx3 uint8."""
        return _read_window(self._array, self._axes, self.path, x0, y0, x1, y1)

    def thumbnail(self, max_side: int) -> np.ndarray:
        """The smallest level at least `max_side` wide, strided down to about 2 x `max_side`, as HxWx3."""
        sizes = [_zarr_size(level, self._axes) for level in self._levels]
        large_enough = [i for i, size in enumerate(sizes) if max(size) >= max_side]
        level = large_enough[-1] if large_enough else len(self._levels) - 1
        step = max(1, max(sizes[level]) // (2 * max_side))
        index = tuple(slice(None, None, step) if a in "YX" else slice(None) if a == "C" else 0 for a in self._axes)
        return _as_rgb_uint8(_channels_last(np.asarray(self._levels[level][index]), self._axes))

    def close(self) -> None:
        """Nothing to release: zarr opens files per read."""


def _zarr_size(array: Any, axes: str) -> tuple[int, int]:
    return int(array.shape[axes.index("X")]), int(array.shape[axes.index("Y")])


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


def open_image(path: str | Path) -> TiffImage | ZarrImage | DecodedImage:
    """Open a section image: lazily for TIFFs and OME-Zarr, fully decoded otherwise."""
    path = Path(path)
    if path.is_dir():
        return ZarrImage(path)
    if not path.is_file():
        raise InputDataError(
            f"Image '{path}' does not exist. Re-run the ingestion pipeline so that "
            "uns['image_path'] points to the section's full-resolution image."
        )
    return TiffImage(path) if is_tiff(path) else DecodedImage(path)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image from its header, without decoding pixels."""
    path = Path(path)
    if path.is_dir():
        return ZarrImage(path).size
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

    Decoded downsampled: JPEG draft mode, the lowest useful TIFF or OME-Zarr pyramid level,
    strided reads of unpyramided ones, because whole-slide images do not fit in memory.
    """
    path = Path(path)
    Image = _pil()
    if path.is_dir():
        zarr_image = ZarrImage(path)
        array, full_size = zarr_image.thumbnail(max_side), zarr_image.size
        image = Image.fromarray(array)
    elif is_tiff(path):
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
