"""Optional annotated tissue regions: her2st pathologist label files or a user CSV."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

logger = logging.getLogger(__name__)

COLUMNS = ["section", "spot_id", "pixel_x", "pixel_y", "label"]


class RegionLabelsDataset(AbstractDataset[None, pd.DataFrame]):
    """Loads spot region labels as a table; an empty table when none exist (labels are optional).

    Reads `<raw_dir>/ST-pat/lbl/<section>_labeled_coordinates.tsv` (her2st: columns
    `Row.names x y pixel_x pixel_y label`; spot id `round(x)xround(y)`) and, when
    given, a user CSV with columns `section, spot_id, label` (optional
    `pixel_x, pixel_y`). User labels win over her2st labels for the same spot.
    """

    def __init__(self, raw_dir: str, labels_csv: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        self._raw_dir = Path(raw_dir)
        self._labels_csv = Path(labels_csv) if labels_csv else None
        self.metadata = metadata

    def _her2st_labels(self) -> list[pd.DataFrame]:
        tables = []
        # the her2st repository keeps ST-pat/ under data/; accept either root
        paths = [
            p
            for root in (self._raw_dir, self._raw_dir / "data")
            for p in (root / "ST-pat" / "lbl").glob("*_labeled_coordinates.tsv")
        ]
        for path in sorted(paths):
            table = pd.read_csv(path, sep="\t").dropna(subset=["x", "y"])
            tables.append(
                pd.DataFrame(
                    {
                        "section": path.name.removesuffix("_labeled_coordinates.tsv"),
                        "spot_id": [f"{round(x)}x{round(y)}" for x, y in zip(table["x"], table["y"], strict=True)],
                        "pixel_x": table["pixel_x"].astype(float),
                        "pixel_y": table["pixel_y"].astype(float),
                        "label": table["label"].astype(str),
                    }
                )
            )
        return tables

    def _user_labels(self) -> list[pd.DataFrame]:
        if self._labels_csv is None:
            return []
        if not self._labels_csv.is_file():
            raise DatasetError(f"Region label file '{self._labels_csv}' does not exist: fix or remove labels_csv.")
        table = pd.read_csv(self._labels_csv, dtype={"section": str, "spot_id": str})
        missing = {"section", "spot_id", "label"} - set(table.columns)
        if missing:
            raise DatasetError(f"Region label file '{self._labels_csv}' lacks columns {sorted(missing)}.")
        return [table.reindex(columns=COLUMNS)]

    def _load(self) -> pd.DataFrame:
        tables = self._her2st_labels() + self._user_labels()
        if not tables:
            logger.info("No region labels under '%s' and no labels_csv: region agreement is skipped.", self._raw_dir)
            return pd.DataFrame(columns=COLUMNS)
        labels = pd.concat(tables, ignore_index=True)
        return labels.drop_duplicates(["section", "spot_id"], keep="last").reset_index(drop=True)

    def _save(self, data: None) -> None:
        raise DatasetError("Region labels are read-only inputs.")

    def _exists(self) -> bool:
        return (self._raw_dir / "ST-pat" / "lbl").is_dir() or bool(self._labels_csv and self._labels_csv.is_file())

    def _describe(self) -> dict[str, Any]:
        return {"raw_dir": str(self._raw_dir), "labels_csv": str(self._labels_csv)}
