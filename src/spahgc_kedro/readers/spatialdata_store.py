"""SpatialData stores (scverse `.zarr`, e.g. written by spatialdata-io's readers), one section per store.

    <raw_dir>/<section>.zarr
        tables/<table>     AnnData of raw counts; its spatialdata_attrs name the shapes it annotates
                           (`region`) and the obs column holding those shapes' index (`instance_key`);
                           rows with obs `in_tissue` 0 are dropped, as Space Ranger's readers do
        shapes/<region>    the spots: circles (points + radius), or polygons such as Visium HD's square bins
        images/<image>     the H&E as an OME-Zarr multiscale image (the largest one unless `image` is given)

Spot centres are mapped into the image's level-0 pixels through both elements' coordinate
transformations to a coordinate system they share (`coordinate_system`, else 'global', else
the first shared one in name order), so `obsm['spatial']` holds full-resolution pixels of
that image as in every other reader, and patches are read from the store's own pyramid.
Needs the optional extra: pip install -e ".[spatialdata]".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from spahgc_kedro.hints import AnnData

from .common import InputDataError, array_rowcol, build_section, check_unique, flag_set

SPATIALDATA_LAYOUT = (
    "<raw_dir>/<section>.zarr SpatialData stores, each with a table of counts annotating one shapes element "
    "(the spots) and an H&E image"
)
INSTALL = 'pip install -e ".[spatialdata]"'


def discover_sections(raw_dir: str | Path) -> list[str]:
    """Names of the `<section>.zarr` stores in `raw_dir`."""
    found = sorted(p.stem for p in Path(raw_dir).glob("*.zarr") if p.is_dir())
    if not found:
        raise InputDataError(f"No SpatialData stores found in '{raw_dir}'. Expected layout: {SPATIALDATA_LAYOUT}")
    return found


def read_store(path: Path) -> Any:
    """`spatialdata.read_zarr(path)`, failing with the fix when the extra is missing or the store is unreadable."""
    try:
        import spatialdata
    except ImportError as err:
        raise InputDataError(
            f"Reading the SpatialData store '{path}' needs the spatialdata package: {INSTALL}."
        ) from err
    if not path.is_dir():
        raise InputDataError(f"Missing SpatialData store: '{path}'. Expected layout: {SPATIALDATA_LAYOUT}")
    try:
        return spatialdata.read_zarr(path)
    except Exception as err:  # noqa: BLE001 - zarr, ome-zarr and pydantic raise many types for a bad store
        raise InputDataError(
            f"Cannot read '{path}' as a SpatialData store ({type(err).__name__}: {err}). Write it with "
            "spatialdata's SpatialData.write, or check it is the store's top folder."
        ) from err


def pick(elements: Any, name: str | None, what: str, option: str, path: Path) -> str:
    """The element called `name`, or the only one when `name` is None; else fail listing the choices."""
    names = sorted(elements.keys())
    if name is not None:
        if name not in names:
            raise InputDataError(f"'{path}' has no {what} '{name}' (it has: {', '.join(names) or 'none'}).")
        return name
    if len(names) != 1:
        raise InputDataError(
            f"'{path}' has {len(names)} {what}s ({', '.join(names) or 'none'}); name the one to read with "
            f"--params datasets.<name>.reader_options.{option}:<name>."
        )
    return names[0]


def largest_image(sdata: Any) -> str | None:
    """The image with the most level-0 pixels (the full-resolution H&E beside hires/lowres copies)."""
    from spatialdata.models import get_axes_names

    def pixels(name: str) -> int:
        element = sdata.images[name]
        array = element["scale0"]["image"] if hasattr(element, "children") else element
        axes = get_axes_names(array)
        return int(array.shape[axes.index("y")]) * int(array.shape[axes.index("x")])

    return max(sorted(sdata.images.keys()), key=pixels) if len(sdata.images) else None


def to_image_pixels(sdata: Any, shapes: str, image: str, coordinate_system: str | None, path: Path) -> np.ndarray:
    """3x3 affine taking the shapes' (x, y) to the image's level-0 (x, y) pixels through a shared coordinate system."""
    from spatialdata.transformations import get_transformation

    to_shapes = get_transformation(sdata.shapes[shapes], get_all=True)
    to_image = get_transformation(sdata.images[image], get_all=True)
    shared = sorted(set(to_shapes) & set(to_image))
    if coordinate_system is None:
        coordinate_system = "global" if "global" in shared else (shared[0] if shared else None)
    if coordinate_system not in shared:
        raise InputDataError(
            f"'{path}': shapes '{shapes}' and image '{image}' share no coordinate system"
            + (f" called '{coordinate_system}'" if coordinate_system else "")
            + f" (shapes: {', '.join(sorted(to_shapes))}; image: {', '.join(sorted(to_image))}). Register them "
            "to one with spatialdata.transformations.set_transformation, or name a shared one with "
            "--params datasets.<name>.reader_options.coordinate_system:<name>."
        )
    xy = ("x", "y")
    shapes_affine = to_shapes[coordinate_system].to_affine_matrix(input_axes=xy, output_axes=xy)
    image_affine = to_image[coordinate_system].to_affine_matrix(input_axes=xy, output_axes=xy)
    return np.linalg.solve(image_affine, shapes_affine)


def spot_geometry(spots: Any, affine: np.ndarray) -> tuple[np.ndarray, float]:
    """Spot centres in image pixels and the median spot diameter in pixels (circles: 2 x radius; polygons:
    the side of a square of the same area)."""
    centroids = spots.geometry.centroid
    xy = np.column_stack([centroids.x.to_numpy(), centroids.y.to_numpy(), np.ones(len(spots))]) @ affine.T
    widths = 2 * spots["radius"].to_numpy(dtype=np.float64) if "radius" in spots else np.sqrt(spots.geometry.area)
    # an area scales by the determinant, a width by its square root
    scale = math.sqrt(abs(np.linalg.det(affine[:2, :2])))
    return xy[:, :2], float(np.median(widths)) * scale


def read_section(
    raw_dir: str | Path,
    section_id: str,
    table: str | None = None,
    image: str | None = None,
    coordinate_system: str | None = None,
    spot_diameter_um: float | None = None,
    platform: str = "visium",
) -> AnnData:
    """Read one SpatialData store's table, spots and H&E into the standard AnnData."""
    path = Path(raw_dir) / f"{section_id}.zarr"
    sdata = read_store(path)
    table_name = pick(sdata.tables, table, "table", "table", path)
    counts = sdata.tables[table_name]
    attrs = counts.uns.get("spatialdata_attrs", {})
    regions = [attrs["region"]] if isinstance(attrs.get("region"), str) else list(attrs.get("region") or [])
    if len(regions) != 1 or regions[0] not in sdata.shapes:
        raise InputDataError(
            f"'{path}': table '{table_name}' must annotate exactly one shapes element (the spots); it annotates "
            f"{', '.join(map(str, regions)) or 'nothing'}. Parse it with spatialdata.models.TableModel.parse("
            "table, region=<spots>, region_key=..., instance_key=...)."
        )
    shapes = regions[0]
    image_name = image if image is not None else largest_image(sdata)
    if image_name is None or image_name not in sdata.images:
        raise InputDataError(
            f"'{path}' has no image{f' {image_name!r}' if image_name else ''} (images: "
            f"{', '.join(sorted(sdata.images.keys())) or 'none'}). Add the H&E with spatialdata.models.Image2DModel."
        )
    rows = counts.obs[attrs["region_key"]].astype(str).to_numpy() == shapes
    if "in_tissue" in counts.obs.columns:
        rows &= flag_set(counts.obs["in_tissue"])
    counts = counts[rows]
    check_unique(counts.obs_names, "table rows", path / "tables" / table_name)
    spots = sdata.shapes[shapes]
    instances = counts.obs[attrs["instance_key"]].to_numpy()
    missing = ~np.isin(instances, spots.index.to_numpy())
    if missing.any():
        raise InputDataError(
            f"'{path}': {int(missing.sum())} rows of table '{table_name}' name spots that shapes '{shapes}' lacks "
            f"(e.g. {instances[missing][0]!r} in obs['{attrs['instance_key']}']). The table and shapes must be "
            "from the same section."
        )
    xy, diameter_px = spot_geometry(
        spots.loc[instances], to_image_pixels(sdata, shapes, image_name, coordinate_system, path)
    )
    return build_section(
        counts.X,
        list(counts.var_names),
        list(counts.obs_names),
        xy,
        array_rowcol(counts.obs, xy),
        section_id=section_id,
        platform=platform,
        image=path / "images" / image_name,
        microns_per_pixel=float(spot_diameter_um) / diameter_px if spot_diameter_um else math.nan,
        spot_diameter_px=diameter_px,
    )
