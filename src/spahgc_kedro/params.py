"""The parameters' schema: every value checked once, before a run starts, in one place.

One pydantic model per pipeline's parameter dict (`conf/base/parameters_<pipeline>.yml`).
Unknown keys are refused, so a misspelt `--params train.epoch:5` is an error rather than
a silently ignored value. `validate_parameters` raises one `ParameterError` listing every
problem as `name = value: what is allowed`; `hooks.ParameterValidationHooks` calls it
when a Kedro context is created, before any pipeline (or MLflow run) starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ParameterError

__all__ = ["validate_parameters"]

Probability = Field(ge=0.0, lt=1.0)
Device = Field(pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _existing_file(value: str | None, name: str) -> str | None:
    if value is not None and not Path(value).is_file():
        raise ValueError(f"no file at '{value}' ({name} names a local file; paths are relative to the project root)")
    return value


class ModelParams(_Strict):
    hidden: int = Field(ge=1)
    n_layers: int = Field(ge=1)
    heads: int = Field(ge=1)
    dropout: float = Probability
    attention_dropout: float = Probability
    use_spatial_edges: bool
    use_reference_edges: bool
    decoder: Literal["linear", "factorised"]

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ModelParams:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        return self


class IngestionParams(_Strict):
    min_spots_per_section: int = Field(ge=1)
    counts: Literal["raw", "normalised"]


class TrainParams(_Strict):
    seed: int
    device: str = Device
    model: ModelParams
    epochs: int = Field(ge=1)
    patience: int = Field(ge=0)
    refit_on_validation: bool
    lr: float = Field(gt=0.0)
    weight_decay: float = Field(ge=0.0)
    use_contrastive: bool
    mask_target: float = Probability
    mask_reference: float = Probability
    teacher: Literal["ema", "frozen", "shared"]
    ema_decay: float = Field(ge=0.0, le=1.0)
    use_predictor: bool
    w_pcc: float = Field(ge=0.0)
    w_target: float = Field(ge=0.0)
    w_reference: float = Field(ge=0.0)
    w_gene_specific: float = Field(ge=0.0)
    threads: int = Field(ge=0)
    resume: bool = True
    max_full_graph_spots: int = Field(default=0, ge=0)


class GraphParams(_Strict):
    # fold and section names may be numbers (patient 1); Kedro reads `--params graph.fold=1` as an int
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    fold_scheme: Literal["leave_one_section_out", "leave_one_patient_out"]
    fold: str = Field(min_length=1)
    validation: str = Field(min_length=1)
    target_transform: Literal["log10", "log10_libsize"]
    k_refer: int = Field(ge=1)
    metric: Literal["l1", "cosine"]
    k_close: int = Field(ge=0)
    max_spatial_neighbours: int = Field(ge=0)
    block_size: int = Field(ge=1)
    retrieval_device: str = Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$")


class EmbeddingParams(_Strict):
    encoder: str = Field(min_length=1)
    device: str = Device
    seed: int
    patch_size_px: int = Field(ge=1)
    patch_size_um: float | None = Field(default=None, gt=0.0)
    pad_value: int = Field(ge=0, le=255)
    context_scale: int = Field(ge=1, le=5)
    views: Literal[1, 8]
    batch_size: int = Field(ge=1)
    num_workers: int = Field(ge=0)
    weights_path: str | None = None
    allow_download: bool

    @field_validator("weights_path")
    @classmethod
    def _weights_exist(cls, value: str | None) -> str | None:
        return _existing_file(value, "embedding.weights_path")


class EvaluationParams(_Strict):
    seed: int
    n_top_genes: int = Field(ge=1)
    baselines: dict[Literal["ridge_pca", "depth_rank1", "knn_l1", "train_mean"], dict[str, Any] | None]


class EnrichmentParams(_Strict):
    gmt_files: list[str]
    pcc_threshold: float = Field(ge=-1.0, le=1.0)
    min_set_size: int = Field(ge=1)
    max_set_size: int = Field(ge=1)

    @field_validator("gmt_files")
    @classmethod
    def _files_exist(cls, value: list[str]) -> list[str]:
        for path in value:
            _existing_file(path, "interpretation.enrichment.gmt_files")
        return value


class InterpretationParams(_Strict):
    seed: int
    n_top_genes: int = Field(ge=1)
    marker_genes: list[str]
    thumbnail_max_side: int = Field(ge=16)
    tumour_markers: list[str]
    enrichment: EnrichmentParams


class PredictParams(_Strict):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    device: str = Device
    chunk_spots: int = Field(ge=0)
    model_fold: str = Field(min_length=1)
    grid_spacing_px: float = Field(gt=0.0)
    tissue_only: bool
    min_tissue_fraction: float = Field(ge=0.0, le=1.0)
    microns_per_pixel: float | None = Field(default=None, gt=0.0)
    map_genes: list[str]
    n_map_genes: int = Field(ge=0)
    thumbnail_max_side: int = Field(ge=16)
    spatialdata: Literal["auto"] | bool = "auto"


SCHEMAS: dict[str, type[BaseModel]] = {
    "ingestion": IngestionParams,
    "train": TrainParams,
    "graph": GraphParams,
    "embedding": EmbeddingParams,
    "evaluation": EvaluationParams,
    "interpretation": InterpretationParams,
    "predict": PredictParams,
}


def _problems(section: str, values: Any, schema: type[BaseModel]) -> list[str]:
    try:
        schema.model_validate(values)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            name = ".".join([section, *(str(part) for part in item["loc"])])
            shown = "(missing)" if item["type"] == "missing" else repr(item.get("input"))
            problems.append(f"{name} = {shown}: {item['msg']}")
        return problems
    return []


def validate_parameters(params: dict[str, Any]) -> None:
    """Check the run's parameters against the schema; one ParameterError naming every bad value."""
    problems = []
    dataset, datasets = params.get("dataset"), params.get("datasets") or {}
    if not dataset or not isinstance(dataset, str):
        problems.append(f"dataset = {dataset!r}: name a dataset preset, e.g. --params dataset:demo")
    elif dataset not in datasets:
        problems.append(f"dataset = {dataset!r}: no such preset; known: {', '.join(sorted(datasets))}")
    if "raw_dir" in params and not str(params["raw_dir"] or "").strip():
        problems.append(
            "raw_dir = '': name the raw data folder, e.g. --params raw_dir:/path/to/folder, or leave it out"
        )
    if not params.get("encoder") or not isinstance(params.get("encoder"), str):
        problems.append(
            f"encoder = {params.get('encoder')!r}: name an encoder, e.g. --params encoder:efficientnet_lite0"
        )
    for section, schema in SCHEMAS.items():
        if section in params:
            problems.extend(_problems(section, params[section], schema))
    if problems:
        raise ParameterError(
            "Parameters the run cannot use (conf/base/parameters_*.yml or --params):\n  " + "\n  ".join(problems)
        )
