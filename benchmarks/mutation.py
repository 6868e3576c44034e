"""The mutation score of the science modules, from mutmut's results (`make mutation`) and the record of earlier runs.

mutmut changes one thing at a time in `metrics`, `targets`, `folds`, `graph`, `model/` and the readers
(an operator, a constant, a string, a call's argument...) and runs the tests that reach the changed
function; a mutant is killed when a test fails. This script reads mutmut's results (`mutants/**.meta`),
merges them into the record of earlier runs (`benchmarks/results/mutation.json`: per module, the SHA-256
of the source checked and, per function, the counts and the commit they were checked at), and writes the
score per module and every surviving mutant, grouped by function, with the reason it is accepted where
one is recorded in `ACCEPTED`. A function keeps its recorded result until a run checks it again on the
same source, so runs of a few functions add up; a record whose source has changed since is marked stale.

    python -m benchmarks.mutation --out benchmarks/results/mutation.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks import common

MUTANTS = common.REPO / "mutants" / "src"
RECORD = common.REPO / "benchmarks" / "results" / "mutation.json"
KINDS = ("killed", "survived", "no tests", "timeout", "suspicious", "not checked")

# mutmut's exit codes (mutmut/stats.py, version 3.8): what happened to each mutant
STATUS_BY_EXIT_CODE = {
    None: "not checked",
    0: "survived",
    1: "killed",
    3: "killed",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    36: "timeout",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
    37: "caught by type check",
    -11: "segfault",
    -9: "segfault",
}

# functions whose every surviving mutant was read and found to compute the same result: why
ACCEPTED: dict[str, str] = {
    "spahgc_kedro.folds._test_groups": "the 'Unknown graph.fold_scheme' message reworded: params.py allows only leave_one_section_out and leave_one_patient_out, and the parameter hook refuses any other scheme before a run starts, so only a direct call can reach it.",
    "spahgc_kedro.graph.FoldReferences.build": "the device's default (None, dropped or 'CPU') for parameters without `retrieval_device`: resolve_retrieval_device reads None as cpu and lowercases 'CPU'.",
    "spahgc_kedro.graph.FoldReferences.links": "the device's default (None, dropped or 'CPU') for parameters without `retrieval_device`: resolve_retrieval_device reads None as cpu and lowercases 'CPU'.",
    "spahgc_kedro.graph.FoldReferences.retrieve": "`block_size` left out: nearest_neighbours's default block changes how many queries go at once, not their neighbours (exact float64 on the CPU); the device's default (None, dropped or 'CPU') for parameters without `retrieval_device`: resolve_retrieval_device reads None as cpu and lowercases 'CPU'.",
    "spahgc_kedro.graph._smallest_k": "`>= k` for `> k` (in the partition test or the tie test), or a partition at k - 2: each only sends more rows, or every row, to the exact lexsort branch (a row whose chosen k are not the k smallest has more than k values at or below their maximum, so it is redone), giving the same neighbours more slowly; argpartition or lexsort without `axis`: their default -1 is axis 1 of these 2-D arrays.",
    "spahgc_kedro.graph.aligned_embedding": "`spots.equals(None)`, which is never true: every section then takes the realigning branch, which selects the same rows in the same order when the ids already match.",
    "spahgc_kedro.graph.assemble_section_graph": "the default `retrieval_device='CPU'`: resolve_retrieval_device lowercases it.",
    "spahgc_kedro.graph.graph_from_parts": "the refer edges made with dtype None: they stack `refer_source` and `arange`, both int64 already; `reshape(-2)`: NumPy reads any negative size as the one to infer, like -1.",
    "spahgc_kedro.graph.merge_section_neighbours": "the section numbers made by `np.full` with `dtype=None` or without it: a Python int fills int64 either way; `lexsort` without `axis=1`: its default axis -1 is axis 1 of these 2-D arrays.",
    "spahgc_kedro.graph.nearest_neighbours": "the default block 2049 for 2048, or a query step of 1 (`range` without `block_size`): which queries go at once, not their neighbours (ties go to the lower index in every block, tested); the default device 'CPU': resolve_retrieval_device lowercases it; float64 and int64 `np.empty`/`arange` without their dtype (NumPy's defaults on this platform), or the running best indices started as an empty float64 array: the first merge then holds the indices as float64 whole numbers, exact below 2**53, and the int64 output takes them back exactly; `metric='CITYBLOCK'`: scipy's cdist reads metric names case-insensitively; the own index masked with None (NaN) instead of inf: NumPy's partition and sort put NaN after every number, and k <= candidates - 1 is checked, so the own index is never among the k smallest of finite embeddings.",
    "spahgc_kedro.graph.nearest_neighbours_torch": "defaults (`metric`, `block_size`, `device`) that no caller uses: nearest_neighbours, its only caller, passes each; `device=None`, `.to(None)` or `arange` without a device: on a CPU-only machine every tensor is on the CPU already (the GPU path is benchmarks/device_gpu.sh's); float64 `np.empty` without its dtype (float64 is the default); a query step of 1 (`range` without `block_size`): the same rows, one at a time; `<=` in the block-overlap test: adjacent blocks give an empty `own` range; `torch.sort` without `dim=1`: dim -1 of a 2-D tensor.",
    "spahgc_kedro.graph.pair_neighbours": "the default `device='CPU'`: its only caller passes the device; `block_size` left out: nearest_neighbours then uses its default block, which changes how many queries go at once, not their neighbours (exact float64 on the CPU); the progress bar's `desc`/`unit` respelled, left out or set to None: only the bar's text.",
    "spahgc_kedro.graph.reference_links": "the default `retrieval_device='CPU'`: resolve_retrieval_device lowercases it; offsets starting at 1 instead of 0: every key and every offset shift by the same 1, so searchsorted finds the same section and key - offset the same spot; `zip(strict=...)` None, False or dropped: both sides come from the same unique keys; `block_size` left out of the close-reference search: the default block changes how many queries go at once, not their neighbours (exact float64 on the CPU); the empty close edges made without int64: the links cast them to int64 (tested).",
    "spahgc_kedro.graph.resolve_retrieval_device": "an unset device read as 'CPU' instead of 'cpu': the next call lowercases it.",
    "spahgc_kedro.graph.retrieval_pairs": "the pairs dict's values set to '' instead of None: only its keys are read.",
    "spahgc_kedro.graph.spatial_edges": "positions passed to cKDTree without the float64 cast: cKDTree copies them to float64 itself; `searchsorted` without `side='left'`, its default; the edges cast with `astype(None)` (float64): graph_from_parts, their only consumer, casts edge indices to int64 (tested).",
    "spahgc_kedro.graph.standardisation": "the default block 65,537 for 65,536: which rows are summed together, not the statistics (float64 sums; several block sizes are tested against NumPy).",
    "spahgc_kedro.graph_store.SectionGraphs._attributes": "the fold's embedding mean and std read without a float32 dtype: standardisation returns them as float32 and the store keeps them so, so `np.asarray` without a dtype gives the same float32 tensors (compared with the assembled graph's, dtype included).",
    "spahgc_kedro.graph_store.SectionGraphs._scalers": "the panel's column indices made without `dtype=np.int64`: a list of Python ints becomes int64 either way, and select_panel refuses an empty panel (the one case where NumPy would pick float64).",
    "spahgc_kedro.graph_store.StoredSectionGraph.feature_sources_digest": "the fold's scaling fingerprinted as float64 instead of float32 bytes: still a fixed function of the values, so the training key changes exactly when they do (tested).",
    "spahgc_kedro.graph_store.StoredSectionGraph.skeleton": "the zero-width target and reference features made as float64 (dtype None or dropped): graph_from_parts casts both to float32 (tested), and a zero-width array holds no value.",
    "spahgc_kedro.graph_store._digest_array": "`view(None)` (the array's own dtype: blocks of `block_bytes` elements instead of bytes, and a hash fed consecutive blocks is the hash of their concatenation), `reshape(None)` (the array keeps its shape: its byte view is sliced by rows, each row once, in order) or `reshape(-2)` (NumPy infers any negative size like -1): the same bytes in the same order.",
    "spahgc_kedro.graph_store.fold_section_graphs": "the transform's fallback (None, dropped or respelled): it is taken only for a fold plan without folds, which ingestion (a dataset has sections) and make_folds (each fold trains on two sections) rule out before the graph stage; the fold's min and max read without a float32 dtype: both consumers, minmax_scale and the feature digest, cast them to float32.",
    "spahgc_kedro.metrics.MeasuredSection.gene_specific": "`<=` vs `<` and `spread > 0` vs `>= 0` differ only for a constant prediction, which the last line sets to NaN anyway; NaN written as None is NaN.",
    "spahgc_kedro.metrics.MeasuredSection.metrics": "float64 dropped from one operand of the difference: the other still makes the subtraction float64, exactly.",
    "spahgc_kedro.metrics.MeasuredSection.pooled": "drops `axis=0` from np.concatenate, its default.",
    "spahgc_kedro.metrics._column_dot": "einsum subscripts in capitals: the same contraction.",
    "spahgc_kedro.metrics._correlation_of_centred": '`divide="ignore"` dropped or None: errstate only decides whether numpy warns, the values are identical (and a non-zero/0 division needs squared norms that underflow, centred values below ~1e-80); NaN written as None into a float64 array is NaN.',
    "spahgc_kedro.metrics._depth_residuals": "drops `rcond=None` from lstsq, its default",
    "spahgc_kedro.metrics.finite_mean": "NaN spelled 'NAN'; the mean of no value is NaN either way, with a warning.",
    "spahgc_kedro.metrics.pooled_pcc": "drops `axis=0` from np.concatenate, its default.",
    "spahgc_kedro.metrics.top_genes": '`kind="STABLE"`: numpy reads the sort kind case-insensitively, the same stable sort.',
    "spahgc_kedro.model.contrastive.complementary_masks": "`device=None` or dropped: the generator is on the CPU here (the GPU path is benchmarks/device_gpu.sh's); `>` for `>=`: differs only when a uniform draw equals p exactly.",
    "spahgc_kedro.model.contrastive.contrastive_loss": "F.normalize without `dim=-1` or with `dim=+1`, and `sum(dim=+1)`: dimension 1 of the [nodes, width] projections is the last one.",
    "spahgc_kedro.model.spahgc.CrossNodeAttentionPooling.forward": "`chunk(2, dim=+1)` for `dim=-1`: dimension 1 of the [references, 2 x hidden] projection is the last one.",
    "spahgc_kedro.model.spahgc.CrossNodeDualAttention.forward": "`cat`/`chunk` along `dim=+1` for `dim=-1`: dimension 1 of the [nodes, width] states is the last one.",
    "spahgc_kedro.model.spahgc.HeterogeneousLayer.forward": "the empty edge index of a missing edge type made with `device=None`: on a CPU-only machine it is the CPU either way.",
    "spahgc_kedro.model.spahgc.SpaHGC.__init__": "`bias=None` for `bias=False` in the four bias-free projections: nn.Linear tests `if bias`, so None builds no bias either (the bias-free forward pass is tested against a hand computation).",
    "spahgc_kedro.model.spahgc.SpaHGC.decode": "the empty edge index of a missing edge type made with `device=None`: on a CPU-only machine it is the CPU either way.",
    "spahgc_kedro.model.spahgc.edge_attention": "the defaults `dropout=0.0` and `training=False` changed one at a time: CNAP, the only caller that relies on them, still gets no dropout (p = 0, or not training); PyG's `softmax` with `num_nodes` None or dropped: it is inferred from the index and only sizes the per-node maximum and sum, so every edge gets the same weight; `scatter` without `dim=0` or `reduce='sum'`: both are its defaults.",
    "spahgc_kedro.model.spahgc.edges": "the empty edge index's `device=None` or dropped: on a CPU-only machine it is the CPU either way.",
    "spahgc_kedro.model.training._chunk_mask": "the mask on the default device: the CPU on a CPU-only machine.",
    "spahgc_kedro.model.training._digest_graph": "`getattr(store, '_key')` without its default: every PyG storage defines `_key`, so the default is never used.",
    "spahgc_kedro.model.training._fit": "device arguments (`.to(None)`, `Generator(device=None)`, copies without a device): on a CPU-only machine every tensor is on the CPU already (the GPU path is benchmarks/device_gpu.sh's); the starting `best_pcc`/`best_epoch`, which epoch 1 always overwrites (`best_epoch` would differ only at epochs=0, which TrainParams rejects); `zero_grad` zeroing instead of setting to None: every parameter gets a gradient at every step, so AdamW sees the same gradients; `best_pcc >= -inf` in the early-stop test: while best_pcc is -inf the update branch has just set best_epoch to this epoch, so no patience >= 1 stops (TrainParams rejects a negative one).",
    "spahgc_kedro.model.training._inspected": "a first tile of 9 spots instead of 8: the shape checks read only column counts and whether y's rows match x's within the tile, the same for every tile.",
    "spahgc_kedro.model.training._layers_in_chunks": "chunk masks and the output buffer on the default device: the CPU on a CPU-only machine.",
    "spahgc_kedro.model.training._on_device": "`.to(None)`, or the graph returned unmoved and uncopied: on a CPU-only machine nothing moves, and no caller edits a graph's stores afterwards.",
    "spahgc_kedro.model.training._step_graph": "a stored tile moved `.to(None)`: on a CPU-only machine it is on the CPU already.",
    "spahgc_kedro.model.training.fit": "the refit run's patience (None, the user's value or 1): it has no validation sections, so best_pcc stays -inf and no patience can stop it; `refit_on_validation` changed in the refit's config: `_fit` never reads it, only `fit` does.",
    "spahgc_kedro.model.training.pcc_per_gene": "NaN spelled float('NAN'): Python reads the name case-insensitively.",
    "spahgc_kedro.model.training.predict": "`chunk_spots <= N` for `< N`: one chunk as large as the section is the whole pass (identical numbers, one layer call); device arguments (None or no move): on a CPU-only machine every tensor is on the CPU already.",
    "spahgc_kedro.model.training.predict_stored": "`zip(strict=...)` None, False or dropped: both sides always hold the three node/edge inputs; the block states started as None instead of []: `states or [...]` replaces either; device arguments (`.to(None)`): on a CPU-only machine every tensor is on the CPU already.",
    "spahgc_kedro.model.training.spatial_tiles": "`arange` on the default device instead of the positions': the CPU on a CPU-only machine.",
    "spahgc_kedro.model.training.tile_subgraph": "the in-tile mask on the default device: the CPU on a CPU-only machine.",
    "spahgc_kedro.model.training.training_key": "`sort_keys` dropped or False: `asdict` gives the dataclass field order, so the same config always gives the same JSON; the 'train'/'validation' labels respelled: still two different fixed labels, so the key changes exactly when the split does (keys are only compared with keys from the same source, which the key hashes).",
    "spahgc_kedro.readers.alex.read_section": 'NaN spelled float("NAN"): Python reads the name case-insensitively, so it is the same NaN.',
    "spahgc_kedro.readers.common.array_rowcol": "`astype(None)` on the extracted spot names: pandas reads a None dtype as float64, like `float`; the rounded names or grid positions cast with `astype(None)` (float64 whole numbers): build_section, the only consumer, casts array_row/array_col to int64 exactly.",
    "spahgc_kedro.readers.common.build_section": "one of the two float64 casts of the centres dropped (the first, before the checks, or the one into `obsm['spatial']`): the other still makes the stored centres float64 (tested), and the finite and inside-the-image checks read integer centres the same.",
    "spahgc_kedro.readers.common.flag_set": "`na_value=None` for `na_value=False`: `== 1` on the coerced numbers leaves no missing value to fill, even for a nullable column with missing flags (checked: Int64 [1, NA, 0] gives [True, False, False] both ways).",
    "spahgc_kedro.readers.common.intersect_spots": "`sort=False` dropped: it is Index.intersection's default.",
    "spahgc_kedro.readers.common.numeric_counts": '`"XXiufXX"` holds the same dtype kinds; `"IUF"` sends numeric tables through pd.to_numeric, which returns the same numbers.',
    "spahgc_kedro.readers.common.spot_spacing": "NaN spelled 'NAN'; the query's k = 3 for 2: column 1 is still each centre's nearest other centre (with two centres cKDTree pads the third column with inf).",
    "spahgc_kedro.readers.image_spots._grid_coordinates": "`astype(None)`: float64 whole numbers (from np.rint) instead of int64, and the only consumer, build_section via read_section, casts array_row/array_col to int64 exactly.",
    "spahgc_kedro.readers.image_spots.read_section": "`dtype=None` on the empty [n, 0] X: build_section casts it to float32; NaN spelled 'NAN'.",
    "spahgc_kedro.readers.image_spots.read_spot_table": "`PIXEL_COLUMNS < columns` for `<=`: they differ only for a table of exactly the pixel columns, which has no barcode and starts with a pixel column, so its second condition skips that branch either way; `{'array_row', 'array_col'} < columns` for `<=`: the table always holds the centre columns too, so the subset is always proper; the centres or array coordinates read without their dtype: numeric columns come back int64 or float64, and build_section casts centres to float64 and array coordinates to int64 (tested).",
    "spahgc_kedro.readers.image_spots.tile_fraction": "`astype(None)`: the summed-area counts are whole numbers, exact in float64; an extra trailing zero row/column of padding is never indexed (stops are clipped to the mask's extent).",
    "spahgc_kedro.readers.image_spots.tile_grid": "`spacing_px < 0` for `<= 0`: a spacing of 0 is already refused by `not spacing_px`; read_thumbnail's default side is THUMBNAIL_MAX_SIDE (1024) itself; `zip(strict=...)` None, False or dropped: the grid rows and columns come from the same mask, equal in length by construction.",
    "spahgc_kedro.readers.image_spots.tissue_mask": "`dtype=None` (float64 instead of float32 HSV) and `>`/`<` for `>=`/`<=`: no 8-bit channel value k has k/255 on or within float32 rounding of 0.08 or 0.92 (checked for all 256), so every comparison agrees.",
    "spahgc_kedro.readers.spatialdata_store.read_section": "`rows = flag_set(...)` for `rows &= flag_set(...)`: the table annotates exactly one shapes element (checked just above), and spatialdata's TableModel refuses a table whose region column holds any other value, so the region mask is all True and the in-tissue flags alone decide either way.",
    "spahgc_kedro.readers.spatialdata_store.to_image_pixels": "`get_all=None` for `get_all=True`: the pinned spatialdata 0.7.3 tests `get_all is False`, so None takes the same branch and returns every transformation.",
    "spahgc_kedro.readers.st_legacy.read_section": "`keep_default_na=None` for False: pandas tests the flag for truth, so 'NA' stays a gene name either way (checked); `zip(strict=...)` None, False or dropped: x and y are two columns of one table; the pixel centres or one array axis read without their dtype (`to_numpy(dtype=None)`, `astype(None)`): float64 whole numbers or numeric columns, which build_section casts to float64 centres and int64 array coordinates (tested).",
    "spahgc_kedro.readers.visium._image": "`path.is_absolute() and False`: pathlib's `raw_dir / path` is `path` itself when `path` is absolute, so the result is the same.",
    "spahgc_kedro.readers.visium.assemble_visium": "`to_numpy(dtype=None)`: the pixel columns are already numeric (read_tissue_positions converts them), and build_section casts xy to float64 first thing.",
    "spahgc_kedro.readers.xenium._image": "`len(images) >= 1`: with one image, `named or images` is that image either way.",
    "spahgc_kedro.readers.xenium.pseudo_spot_grid": "candidate rows row0-2 / row0+3 for row0-1 / row0+2: a hex Voronoi cell reaches only s/sqrt(3) < s*sqrt(3)/2 vertically, so the nearest (or tied) centre is always in row0 or row0+1 and the outer candidate rows never win (checked on 1.4M random, lattice, edge and vertex points).",
    "spahgc_kedro.readers.xenium.read_alignment": "`<= 1e-12` for `< 1e-12` in the singular-matrix test: they differ only for a determinant of exactly 1e-12, far from any alignment a slide could have (a determinant is the squared pixel scale, ~1e-2 to 1e2).",
    "spahgc_kedro.readers.xenium.read_cells": "`astype(None)`: pandas reads a None dtype as float64, the same cast.",
    "spahgc_kedro.readers.xenium.read_section": "`sort` of the cell-id intersection: the cell order only reaches the output through np.unique (which sorts the pseudo-spots), sums of whole-number counts and per-label identical centres; `shape` of the pooling matrix dropped: np.unique's inverse covers every pseudo-spot and arange every cell, so the inferred shape is the same.",
    "spahgc_kedro.spill.spilled": "the temporary file's prefix (None, or respelled): only its name, and the file is unlinked at once; `view(None)`, `reshape(None)` or `reshape(-2)` of the written array: the same bytes in the same order (the mapped copy is compared with the values, tested).",
    "spahgc_kedro.targets.load_gene_list": "`allow_pickle=None` or dropped: both refuse a pickled array like False (the refusal is tested).",
    "spahgc_kedro.targets.minmax_scale": "`astype(np.float32, copy=...)` with copy True, None or dropped: the result is float32 already, so the flag only decides whether it is copied once more; the values are the same.",
    "spahgc_kedro.targets.minmax_statistics": "drops `axis=0` from np.concatenate, its default.",
    "spahgc_kedro.targets.seurat_v3_hvgs": "the spot table passed as None or left out: the HVG ranking reads only the counts and the gene names, so the same genes come back; `inplace=None`: falsy like False, so scanpy returns the table.",
    "spahgc_kedro.targets.transformed_expression": "`astype(None)`: NumPy reads a None dtype as float64, the same cast.",
}


def mutant_status(meta_root: Path = MUTANTS) -> dict[str, dict[str, str]]:
    """{module: {mutant name: status}} from mutmut's result files (status: killed, survived, no tests...)."""
    statuses: dict[str, dict[str, str]] = {}
    for meta in sorted(meta_root.rglob("*.py.meta")):
        module = meta.relative_to(meta_root).as_posix().removesuffix(".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if codes:
            statuses[module] = {name: STATUS_BY_EXIT_CODE.get(code, "suspicious") for name, code in codes.items()}
    return statuses


def source_sha256(module: str, root: Path = common.REPO / "src") -> str:
    """The SHA-256 of a mutated module's source (`spahgc_kedro/graph.py`), or '' when it is gone."""
    path = root / module
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def made_before_source(module: str, meta_root: Path = MUTANTS, root: Path = common.REPO / "src") -> bool:
    """Whether mutmut's mutated copy of `module` is older than its source: its results then describe an earlier
    source (mutmut makes the copy again on its next run), not the one the record would file them under."""
    mutated, source = meta_root / module, root / module
    return mutated.exists() and source.exists() and mutated.stat().st_mtime < source.stat().st_mtime


def function_of(mutant: str) -> str:
    """`spahgc_kedro.graph.x_build__mutmut_3` -> `spahgc_kedro.graph.build` (classes: `Class.method`)."""
    head, _, _ = mutant.rpartition("__mutmut_")
    module, _, name = head.rpartition(".")
    name = name[2:].replace("ǁ", ".") if name.startswith("xǁ") else name.removeprefix("x_")
    return f"{module}.{name}"


def module_result(by_mutant: dict[str, str], sha256: str, commit: str) -> dict[str, Any]:
    """One module's entry of the record: per function, its mutants' statuses and the commit they were checked at
    (none for a function this run did not reach), and the module's totals and survivors derived from them."""
    by_function: dict[str, Counter] = {}
    for mutant, status in by_mutant.items():
        by_function.setdefault(function_of(mutant), Counter())[status] += 1
    functions = {
        name: {"counts": dict(counts), "commit": commit if _checked({"counts": counts}) else None}
        for name, counts in sorted(by_function.items())
    }
    return _totals({"source_sha256": sha256, "functions": functions})


def _totals(result: dict[str, Any]) -> dict[str, Any]:
    """`result` with its module counts, survivors by function and commits (most mutants first) summed from its
    functions."""
    functions = result["functions"]
    counts: Counter = Counter()
    commits: Counter = Counter()
    for entry in functions.values():
        counts.update(entry["counts"])
        if entry["commit"]:
            commits[entry["commit"]] += _checked(entry)
    survivors = {
        name: n
        for name, entry in functions.items()
        if (n := entry["counts"].get("survived", 0) + entry["counts"].get("no tests", 0))
    }
    commit = ", ".join(c for c, _ in sorted(commits.items(), key=lambda item: (-item[1], item[0])))
    return {**result, "commit": commit, "counts": dict(counts), "survivors": survivors}


def merge(record: dict[str, dict[str, Any]], fresh: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The record with this run's results merged in, function by function on an unchanged source (a function this
    run checked replaces its record unless the run stopped before checking as many of its mutants; one it did not
    reach keeps its record); a record kept per module (before results were recorded per function) is first split
    per function where that is exact, else replaced unless the run checked fewer mutants; on a changed source the
    run's result replaces the record."""
    merged = dict(record)
    for module, result in fresh.items():
        recorded = record.get(module)
        if not _checked(result):
            merged.setdefault(module, result)
        elif recorded is None or recorded["source_sha256"] != result["source_sha256"]:
            merged[module] = result
        elif "functions" in recorded:
            merged[module] = _merge_functions(recorded, result)
        elif (split := _split_per_function(recorded, result)) is not None:
            merged[module] = _merge_functions(split, result)
        elif _checked(result) >= _checked(recorded):
            merged[module] = result
    return dict(sorted(merged.items()))


def _split_per_function(recorded: dict[str, Any], result: dict[str, Any]) -> dict[str, Any] | None:
    """A record kept per module, split per function where that is exact: a record that checked every mutant, or
    one whose unchecked mutants are exactly the whole functions this run checked (none with a recorded survivor).
    Each function the record checked then holds its recorded survivors and the rest of its mutants killed, which
    must add up to the record's kills; None when the record cannot be split so."""
    counts = recorded["counts"]
    fresh = {name for name, entry in result["functions"].items() if _checked(entry)}
    fully_checked = all(not result["functions"][name]["counts"].get("not checked") for name in fresh)
    if set(counts) - {"killed", "survived", "not checked"} or not fully_checked:
        return None
    unchecked = counts.get("not checked", 0)
    if not unchecked:
        left = set()
    elif unchecked == sum(sum(result["functions"][name]["counts"].values()) for name in fresh):
        left = fresh
    else:
        return None
    if left & set(recorded["survivors"]):
        return None
    functions = {}
    for name, entry in result["functions"].items():
        if name in left:
            continue
        survived = recorded["survivors"].get(name, 0)
        split_counts = {"killed": sum(entry["counts"].values()) - survived, "survived": survived}
        functions[name] = {"counts": {k: n for k, n in split_counts.items() if n}, "commit": recorded["commit"]}
    split = _totals({"source_sha256": recorded["source_sha256"], "functions": functions})
    kills_match = split["counts"].get("killed", 0) == counts.get("killed", 0)
    return split if kills_match and split["survivors"] == recorded["survivors"] else None


def _merge_functions(recorded: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """One module's record and a run on the same source, merged per function; a function re-checked with the same
    counts keeps the commit it was first checked at."""
    functions = dict(recorded["functions"])
    for name, entry in result["functions"].items():
        kept = functions.get(name)
        if kept is None or (_checked(entry) >= _checked(kept) and entry["counts"] != kept["counts"]):
            functions[name] = entry
    return _totals({"source_sha256": recorded["source_sha256"], "functions": dict(sorted(functions.items()))})


def _checked(result: dict[str, Any]) -> int:
    """How many of a result's mutants were run against the tests."""
    return sum(n for kind, n in result["counts"].items() if kind not in ("not checked", "skipped"))


def score(counts: Counter) -> float:
    """The mutation score of the mutants checked so far: killed (and timed out) over those checked, in percent
    (mutmut's own score also counts the unchecked ones as not killed)."""
    tested = sum(counts.values()) - counts["skipped"] - counts["not checked"]
    return 100.0 * (counts["killed"] + counts["timeout"]) / tested if tested else float("nan")


def percent(value: float) -> str:
    """`85.5%`, or `-` when nothing was checked."""
    return "-" if math.isnan(value) else f"{value:.1f}%"


def report(results: dict[str, dict[str, Any]], current_sha: dict[str, str]) -> str:
    """The markdown table per module (with the commit it was checked at) and the survivors by function."""
    lines = [
        "| module | mutants | " + " | ".join(KINDS) + " | score | checked at |",
        "|---|---|" + "---|" * len(KINDS) + "---|---|",
    ]
    total: Counter = Counter()
    survivors: Counter = Counter()
    for module, result in results.items():
        counts = Counter(result["counts"])
        total += counts
        survivors.update(result["survivors"])
        cells = " | ".join(str(counts[kind]) for kind in KINDS)
        stale = "" if current_sha.get(module) == result["source_sha256"] else " (STALE: source changed since)"
        lines.append(
            f"| {module} | {sum(counts.values())} | {cells} | {percent(score(counts))} | {result['commit']}{stale} |"
        )
    cells = " | ".join(str(total[kind]) for kind in KINDS)
    lines.append(f"| **all** | {sum(total.values())} | {cells} | **{percent(score(total))}** | |")
    ordered = sorted(survivors, key=lambda f: (-survivors[f], f))
    accepted = [f"`{f}` {survivors[f]} ({ACCEPTED[f]})" for f in ordered if f in ACCEPTED]
    others = [f"`{f}` {survivors[f]}" for f in ordered if f not in ACCEPTED]
    lines += [
        "",
        "Surviving mutants (and those no selected test reaches), by function, not yet read: "
        + (", ".join(others) if others else "none"),
    ]
    lines += ["", "Read and found equivalent: " + ("; ".join(accepted) if accepted else "none")]
    return "\n".join(lines)


def checked_commit(module: str) -> str:
    """The short commit the module was checked at, `+changes` when its source differs from that commit's."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=common.REPO, capture_output=True, text=True).stdout.strip()

    changed = git("status", "--porcelain", "--", f"src/{module}")
    return git("rev-parse", "--short", "HEAD") + ("+changes" if changed else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--record", type=Path, default=RECORD)
    args = parser.parse_args()
    record = json.loads(args.record.read_text()) if args.record.exists() else {}
    statuses = mutant_status()
    older = sorted(m for m in statuses if made_before_source(m))
    if older:
        print(
            f"Not read: mutants/ holds results for an older source of {', '.join(older)} (their rows keep their "
            "record, marked STALE); `make mutation` checks the current source."
        )
    fresh = {m: module_result(s, source_sha256(m), checked_commit(m)) for m, s in statuses.items() if m not in older}
    results = merge(record, fresh)
    if not results:
        raise SystemExit("No mutmut results under mutants/ and no record: run `make mutation` first.")
    args.record.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    header = [
        "### Mutation testing: how many one-line changes to the science modules the tests catch",
        "",
        "- tool: mutmut 3 (`make mutation`), configured in `pyproject.toml` `[tool.mutmut]`: modules mutated and",
        "  the test files run against each mutant (the fast unit, science-guard and reader tests; real HER2+",
        "  sections from ../shared/data where present)",
        "- score = (killed + timeout) / mutants checked, the target is >= 80%; `no tests` (no selected test",
        "  reaches the function) counts as not killed; `not checked`: the run stopped before these mutants (it",
        "  resumes there), so a module with some unchecked has a partial score",
        "- each function's result comes from the last run that checked it on the module's current source, so a",
        "  row can add up several runs (`checked at`: their commits, most mutants first); the record,",
        "  `mutation.json`, keeps the source's SHA-256: a row whose source changed since is marked STALE",
        f"- machine of the last run: {common.cpu_model()}",
        "",
        "",
    ]
    current = {module: source_sha256(module) for module in results}
    common.write_table("\n".join(header) + report(results, current), args.out)


if __name__ == "__main__":
    main()
