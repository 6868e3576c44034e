"""Smoke tests of the benchmark scripts with tiny settings: they run and print complete tables.

No timing is asserted: the scripts print figures; these tests only check that what they
print says what it measures and that their small helpers compute the right thing.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import accuracy, common, predict_whole_slide, runners, scaling, uncertainty


def test_log_log_slope_recovers_power_law():
    sizes = [1_000, 5_000, 20_000]
    assert common.log_log_slope(sizes, [3 * s**2 for s in sizes]) == pytest.approx(2.0)
    assert np.isnan(common.log_log_slope([1_000], [1.0]))


def test_hex_positions_are_a_hexagonal_grid():
    from scipy.spatial import cKDTree

    xy, rowcol = scaling.hex_positions(500)
    assert xy.shape == (500, 2) and rowcol.shape == (500, 2)
    distances, _ = cKDTree(xy).query(xy, k=7)
    # interior spots of a hexagonal grid have 6 neighbours at one spacing
    interior = (distances[:, 1:] < scaling.SPACING_PX * 1.01).sum(axis=1) == 6
    assert interior.sum() > 300
    assert np.allclose(distances[:, 1], scaling.SPACING_PX)


def test_accuracy_quick_on_demo_runs_the_pipelines_and_prints_every_method(tmp_path):
    out = tmp_path / "accuracy_demo.md"
    variant = "no spatial edges"
    # the default's and the paper setting's runs also score the baselines, on their features
    variants = [variant, accuracy.ENSEMBLE_VARIANT, *accuracy.FEATURE_SETS]
    table = accuracy.main(
        ["--dataset", "demo", "--quick", "--work-dir", str(tmp_path), "--out", str(out), "--variants", *variants]
    )
    assert f"| {variant} |" in table
    assert f"| {accuracy.ENSEMBLE_VARIANT} |" in table
    for label in accuracy.BASELINES.values():
        for features in accuracy.FEATURE_SETS.values():
            assert f"| {label}, {features} |" in table
    for stated in (
        "data: demo",
        "genes:",
        "target transform: log10",
        "folds: leave_one_section_out",
        "PCC conventions",
        "gene-specific PCC",
        "encoder:",
        "machine:",
        "wall time:",
        "Reference line, not a method: oracle depth",
    ):
        assert stated in table
    written = out.read_text()
    assert "Hist2ST 0.156" in written and "mclSTExp 0.232" in written
    # the scores are the pipelines' outputs, saved for reuse: a second run fits nothing
    again = accuracy.main(
        ["--dataset", "demo", "--quick", "--work-dir", str(tmp_path), "--cached-only", "--variants", *variants]
    )
    assert again.split("| method |")[1] == table.split("| method |")[1]


def test_a_graph_only_variant_starts_from_the_embeddings_of_an_earlier_data_root(tmp_path):
    base = {"dataset": "demo", "encoder": "efficientnet_lite0"}
    default, rotate, spot_patch = (tmp_path / f"upstream-{name}" for name in ("a", "b", "c"))
    for root in (default, rotate, spot_patch):
        root.mkdir()  # as prepare() makes it
    (default / "04_feature" / "demo").mkdir(parents=True)
    (default / "04_feature" / "demo" / "A1.h5ad").write_text("embedded once")
    accuracy.seed_embeddings(default, base)
    accuracy.seed_embeddings(rotate, {**base, "graph": {"validation": "rotate"}})
    assert (rotate / "04_feature" / "demo" / "A1.h5ad").read_text() == "embedded once"
    # other embedding parameters: nothing is copied, the embedding stage embeds every section
    accuracy.seed_embeddings(spot_patch, {**base, "embedding": {"context_scale": 1}})
    assert not (spot_patch / "04_feature").exists()


def test_accuracy_skips_without_her2st(tmp_path, capsys):
    assert accuracy.main(["--raw-dir", str(tmp_path / "absent"), "--quick"]) == ""
    assert "SKIPPED" in capsys.readouterr().out


def test_runners_names_the_shared_her2st_data_or_says_why_it_skips(tmp_path, monkeypatch):
    params = runners.dataset_params(runners.parse_args(["--dataset", "her2st"])) if common.HER2ST_RAW.exists() else []
    if params:
        assert params[0] == "dataset:her2st" and f"raw_dir:{common.HER2ST_RAW.resolve()}" in params
    monkeypatch.setattr(common, "HER2ST_RAW", tmp_path / "absent")
    with pytest.raises(SystemExit, match="skipped: the shared HER2\\+ data is not here .*absent"):
        runners.dataset_params(runners.parse_args(["--dataset", "her2st"]))
    assert runners.dataset_params(runners.parse_args([])) == ["dataset:demo"]


def test_scaling_quick_prints_stages_and_exponents(tmp_path):
    table = scaling.main(["--quick", "--work-dir", str(tmp_path)])
    for stage in scaling.STAGES:
        assert f"{stage} s (MiB)" in table
    assert "growth exponent (log-log slope" in table
    assert "| 100 x 4 |" in table and "| 200 x 4 |" in table
    assert "| 3 |" in table  # the reference-count sweep


def test_generated_sections_share_one_readable_image(tmp_path):
    import os
    import zlib

    from spahgc_kedro.images import TiffImage

    raw = scaling.generated_dataset(tmp_path, 100, 2, 5)
    images = [raw / f"G{i}" / "image.tif" for i in range(2)]
    assert os.stat(images[0]).st_ino == os.stat(images[1]).st_ino
    image = TiffImage(images[1])
    # the pre-encoded tiles decode to the pixels they were made from, in tile order
    first, second = (
        np.frombuffer(zlib.decompress(t), np.uint8).reshape(512, 512, 3) for t in scaling.encoded_tiles()[:2]
    )
    np.testing.assert_array_equal(image.read(0, 0, 512, 512), first)
    np.testing.assert_array_equal(image.read(512, 0, 1024, 300), second[:300])
    image.close()


def test_scaling_fixed_reference_table_quick(tmp_path):
    out = tmp_path / "scaling.md"
    table = scaling.main(["--quick", "--tables", "fixed-reference", "--work-dir", str(tmp_path), "--out", str(out)])
    assert "### Graph construction vs target spots, fixed reference set" in table
    assert "time and peak memory per stage" not in table  # only the table asked for
    for stated in ("2 training sections of 200 spots", "random 16-d", "block_size 2048", "machine:", "wall time:"):
        assert stated in table
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith(("| 100 |", "| 300 |"))]
    assert len(rows) == 2
    # reference nodes: the distinct retrieved spots, never more than the fixed reference set holds
    assert all(0 < int(row[4]) <= 2 * 200 for row in rows)
    assert "| growth exponent (log-log slope, 100..300) |" in table
    assert out.read_text().strip() == table.strip()


def test_uncertainty_summary_ranks_genes_by_relative_spread():
    from scipy.stats import pearsonr

    rng = np.random.default_rng(0)
    spots, genes = 200, 8
    measured = rng.normal(size=(spots, genes))
    # gene g: every model predicts measured + noise of sd noise[g], so the models disagree more, and
    # the ensemble is worse, as g grows; the spread relative to the prediction's own sd rises with g
    noise = np.array([0.0, 0.1, 0.3, 0.6, 1.0, 1.6, 2.5, 4.0])
    runs = []
    for _ in range(3):
        noisy = measured + rng.normal(size=(spots, genes)) * noise
        runs.append(
            {
                "normalised": noisy,
                "log_expression": noisy,
                "measured": measured,
                "genes": np.array([f"g{g}" for g in range(genes)]),
                "spots": np.array([f"s{i}" for i in range(spots)]),
            }
        )
    summary = uncertainty.section_summary(runs)
    ensemble = np.mean([r["normalised"] for r in runs], axis=0)
    pcc = np.array([pearsonr(measured[:, g], ensemble[:, g]).statistic for g in range(genes)])
    assert summary["ensemble_acg"] == pytest.approx(pcc.mean())
    assert summary["genes"] == summary["panel"] == genes
    assert summary["relative_spearman"] < -0.8
    # quarters of 2 genes: the two least noisy genes against the two noisiest
    assert summary["relative_certain_q"] == pytest.approx(pcc[:2].mean())
    assert summary["relative_uncertain_q"] == pytest.approx(pcc[-2:].mean())
    with pytest.raises(ValueError, match="same spots and genes"):
        uncertainty.section_summary([runs[0], {**runs[1], "spots": runs[1]["spots"][::-1]}])


def test_uncertainty_skips_without_her2st(tmp_path, capsys):
    assert uncertainty.main(["--raw-dir", str(tmp_path / "absent")]) == ""
    assert "SKIPPED" in capsys.readouterr().out


def test_predict_whole_slide_quick_prints_every_step_and_exponents(tmp_path):
    table = predict_whole_slide.main(["--quick", "--work-dir", str(tmp_path)])
    for step in predict_whole_slide.STEPS:
        assert f"{step} s (MiB)" in table
    assert "| 324 |" in table and "| 1225 |" in table  # 18 x 18 and 35 x 35 tile grids
    assert "EXTRAPOLATED" in table and "growth exponent" in table
    # the slides' predictions were written where the predict pipeline writes them
    assert len(list(tmp_path.rglob("new_predictions/*.h5ad"))) == 2


def test_mutation_table_counts_mutmut_results_by_module(tmp_path):
    import json

    from benchmarks import mutation

    meta = tmp_path / "spahgc_kedro" / "metrics.py.meta"
    meta.parent.mkdir(parents=True)
    codes = {f"spahgc_kedro.metrics.x_pcc__mutmut_{i}": code for i, code in enumerate([1, 1, 1, 0, 33, 36, 34], 1)}
    codes["spahgc_kedro.metrics.xǁFitǁrun__mutmut_1"] = 0
    codes["spahgc_kedro.metrics.x_pcc__mutmut_9"] = None
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    statuses = mutation.mutant_status(tmp_path)
    assert list(statuses) == ["spahgc_kedro/metrics.py"]
    fresh = {"spahgc_kedro/metrics.py": mutation.module_result(statuses["spahgc_kedro/metrics.py"], "abc", "c1")}
    table = mutation.report(fresh, {"spahgc_kedro/metrics.py": "abc"})
    # 3 killed + 1 timeout over 8 mutants less 1 skipped and 1 not checked
    assert "| spahgc_kedro/metrics.py | 9 | 3 | 2 | 1 | 1 | 0 | 1 | 57.1% | c1 |" in table
    assert "`spahgc_kedro.metrics.pcc` 2, `spahgc_kedro.metrics.Fit.run` 1" in table


def test_mutation_record_keeps_modules_a_run_did_not_check_and_marks_stale_sources():
    from benchmarks import mutation

    recorded = {
        "a.py": {
            "source_sha256": "old",
            "commit": "c0",
            "counts": {"killed": 9, "survived": 1},
            "survivors": {"a.f": 1},
        },
        "b.py": {"source_sha256": "b", "commit": "c0", "counts": {"killed": 1, "survived": 1}, "survivors": {"b.g": 1}},
    }
    fresh = {
        "a.py": mutation.module_result({"a.x_f__mutmut_1": "not checked"}, "new", "c1"),
        "b.py": mutation.module_result(
            {"b.x_g__mutmut_1": "killed", "b.x_g__mutmut_2": "killed", "b.x_g__mutmut_3": "not checked"}, "b", "c1"
        ),
    }
    merged = mutation.merge(recorded, fresh)
    # a.py was not checked by this run: its record stays; b.py was: this run's result replaces it
    assert merged["a.py"] == recorded["a.py"] and merged["b.py"]["commit"] == "c1"
    table = mutation.report(merged, {"a.py": "new", "b.py": "b"})
    assert "| a.py | 10 | 9 | 1 | 0 | 0 | 0 | 0 | 90.0% | c0 (STALE: source changed since) |" in table
    assert "| b.py | 3 | 2 | 0 | 0 | 0 | 0 | 1 | 100.0% | c1 |" in table
    assert "`a.f` 1" in table and "b.g" not in table
    # a run stopped part-way on the same source does not replace a fuller check of a record kept per module; on
    # a changed source it does
    partial = mutation.module_result({"b.x_g__mutmut_1": "not checked", "b.x_g__mutmut_2": "survived"}, "b", "c4")
    legacy = {"source_sha256": "b", "commit": "c3", "counts": {"killed": 2}, "survivors": {}}
    assert mutation.merge({"b.py": legacy}, {"b.py": partial})["b.py"] == legacy
    assert mutation.merge({"b.py": {**legacy, "source_sha256": "old"}}, {"b.py": partial})["b.py"] == partial


def test_mutation_runs_of_a_few_functions_add_up_on_the_same_source():
    from benchmarks import mutation

    def run(statuses: dict[str, str], commit: str, sha: str = "s") -> dict:
        return {"m.py": mutation.module_result(statuses, sha, commit)}

    first = run({"m.x_f__mutmut_1": "killed", "m.x_f__mutmut_2": "survived", "m.x_g__mutmut_1": "not checked"}, "c1")
    second = run(
        {"m.x_f__mutmut_1": "not checked", "m.x_f__mutmut_2": "not checked", "m.x_g__mutmut_1": "killed"}, "c2"
    )
    merged = mutation.merge(mutation.merge({}, first), second)["m.py"]
    # f from the first run, g from the second: both count, and the row names both commits, most mutants first
    assert merged["counts"] == {"killed": 2, "survived": 1} and merged["survivors"] == {"m.f": 1}
    assert merged["commit"] == "c1, c2"
    # f re-checked after a new test: its survivor goes; a run that stopped inside f keeps the fuller check
    killed = run({"m.x_f__mutmut_1": "killed", "m.x_f__mutmut_2": "killed", "m.x_g__mutmut_1": "not checked"}, "c3")
    again = mutation.merge({"m.py": merged}, killed)["m.py"]
    assert again["counts"] == {"killed": 3} and again["survivors"] == {} and again["commit"] == "c3, c2"
    stopped = run({"m.x_f__mutmut_1": "survived", "m.x_f__mutmut_2": "not checked", "m.x_g__mutmut_1": "killed"}, "c4")
    assert mutation.merge({"m.py": again}, stopped)["m.py"]["functions"]["m.f"]["commit"] == "c3"
    # the same counts again keep the commit they were first checked at
    assert mutation.merge({"m.py": again}, killed)["m.py"] == again
    # a changed source starts again from this run alone
    changed = mutation.merge({"m.py": again}, run({"m.x_f__mutmut_1": "survived"}, "c5", sha="t"))["m.py"]
    assert changed["counts"] == {"survived": 1} and changed["commit"] == "c5"


def test_a_record_kept_per_module_is_split_per_function_when_a_run_checks_exactly_what_it_left():
    from benchmarks import mutation

    # the record checked f (1 survivor) and h, and left g's 2 mutants unchecked
    legacy = {
        "source_sha256": "s",
        "commit": "c0",
        "counts": {"killed": 3, "survived": 1, "not checked": 2},
        "survivors": {"m.f": 1},
    }
    names = ["m.x_f__mutmut_1", "m.x_f__mutmut_2", "m.x_h__mutmut_1", "m.x_h__mutmut_2"]
    g_run = {**dict.fromkeys(names, "not checked"), "m.x_g__mutmut_1": "killed", "m.x_g__mutmut_2": "survived"}
    merged = mutation.merge({"m.py": legacy}, {"m.py": mutation.module_result(g_run, "s", "c1")})["m.py"]
    assert merged["counts"] == {"killed": 4, "survived": 2} and merged["survivors"] == {"m.f": 1, "m.g": 1}
    assert merged["functions"]["m.f"] == {"counts": {"killed": 1, "survived": 1}, "commit": "c0"}
    assert merged["commit"] == "c0, c1"
    # a run that checked part of g, or g and more, does not fit the record's gap: the fuller record stays
    half = {**g_run, "m.x_g__mutmut_2": "not checked"}
    assert mutation.merge({"m.py": legacy}, {"m.py": mutation.module_result(half, "s", "c1")})["m.py"] == legacy
    more = {**g_run, "m.x_h__mutmut_1": "killed"}
    assert mutation.merge({"m.py": legacy}, {"m.py": mutation.module_result(more, "s", "c1")})["m.py"] == legacy
    # a record that checked everything splits too: a re-checked function replaces its share
    complete = {**legacy, "counts": {"killed": 4, "survived": 2}, "survivors": {"m.f": 1, "m.g": 1}}
    g_again = {**g_run, "m.x_g__mutmut_2": "killed"}
    rechecked = mutation.merge({"m.py": complete}, {"m.py": mutation.module_result(g_again, "s", "c2")})["m.py"]
    assert rechecked["counts"] == {"killed": 5, "survived": 1} and rechecked["survivors"] == {"m.f": 1}
    assert rechecked["commit"] == "c0, c2"


def test_a_score_is_keyed_on_what_it_depends_on_only():
    base = accuracy.score_key({"dataset": "her2st", "seed": 0})
    assert "xenium" not in str(base["params"]) and base["preset"]["format"] == "st_legacy"
    assert accuracy.score_key({"dataset": "her2st", "seed": 0}) == base
    # another dataset's preset and the report's settings leave the key alone; a training setting changes it
    assert accuracy.score_key({"dataset": "her2st", "seed": 0, "datasets": {"demo": {"exclude": ["B2"]}}}) == base
    assert accuracy.score_key({"dataset": "her2st", "seed": 0, "interpretation": {"n_top_genes": 9}}) == base
    assert accuracy.score_key({"dataset": "her2st", "seed": 0, "train": {"lr": 0.5}}) != base
    assert accuracy.score_key({"dataset": "her2st", "seed": 0, "datasets": {"her2st": {"exclude": ["C2"]}}}) != base
    assert accuracy.score_key({"dataset": "her2st", "seed": 1}) != base


def test_chunked_prediction_table_runs_and_compares_like_with_like():
    import subprocess
    import sys

    command = [sys.executable, "-m", "benchmarks.chunked_prediction", "--sizes", "300", "--chunk", "100"]
    output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=common.REPO, timeout=600).stdout
    rows = [line for line in output.splitlines() if line.startswith("| 300 |")]
    assert rows and all(row.endswith("| yes |") for row in rows)
    assert "chunks of 100" in output and "measured, one process per cell" in output


def test_evaluation_scaling_runs_the_evaluation_stage_on_generated_large_sections(tmp_path):
    from benchmarks import evaluation_scaling

    out = tmp_path / "table.md"
    argv = ["--spots", "150", "300", "--sections", "3", "--genes", "12", "--dim", "8", "--work-dir", str(tmp_path)]
    table = evaluation_scaling.main([*argv, "--out", str(out)])
    assert "| 150 |" in table and "| 300 |" in table and "growth exponent" in table and out.exists()
    assert "MEASURED" in table and "leave-one-section-out, 3 folds" in table
    # the work folders are removed after each size
    assert not list(tmp_path.rglob("section_graphs"))


def test_graph_protocol_measures_the_store_and_extrapolates_the_other_folds(tmp_path):
    from benchmarks import graph_protocol

    argv = ["--sections", "4", "--spots", "60", "--genes", "200", "--dim", "256", "--work-dir", str(tmp_path)]
    table = graph_protocol.main(argv)
    rows = {line.split("|")[1].strip(): line.split("|")[2:4] for line in table.splitlines() if line.startswith("| ")}
    assert rows["folds x graphs"] == [" 1 x 4 ", " 4 x 4 "]
    assert "EXTRAPOLATED from 1 measured fold(s) x 4" in table
    number = lambda cell: float(cell.replace(",", "").replace("at most", ""))  # noqa: E731
    sections, links = (number(rows[name][0]) for name in ("sections, stored once (MiB)", "per-fold links (MiB)"))
    assert number(rows["per-fold links (MiB)"][1]) == pytest.approx(4 * links, abs=0.2)
    # the store is the sections once plus links; one file per graph holds the features 4 times over
    assert number(rows["graph store on disk (MiB)"][0]) >= sections
    assert number(rows["one file per graph, as before (MiB)"][1]) > number(rows["graph store on disk (MiB)"][1])


def test_tiled_training_table_compares_whole_and_tiled_epochs(tmp_path):
    from benchmarks import tiled_training

    argv = ["--whole", "300", "--tiled", "300", "600", "--tile", "150", "--genes", "6", "--dim", "8", "--hidden", "8"]
    table = tiled_training.main([*argv, "--threads", "1"])
    assert "| 300 | whole | 1 |" in table and "| 300 | tiled | 2 |" in table and "| 600 | tiled | 4 |" in table
    assert "| growth exponent | tiled |" in table


def test_visium_hd_table_runs_every_stage_on_both_bin_sizes_and_labels_the_estimates(tmp_path):
    from benchmarks import visium_hd_scaling

    argv = ["--bins", "400", "--genes", "12", "--dim", "16", "--tile", "40", "--chunk", "60", "--threads", "1"]
    argv += ["--sample", "4", "--retrieval-sample", "8", "--work-dir", str(tmp_path), "--graph-max-bins", "200"]
    argv += ["--tiles-8um", "2"]
    table = visium_hd_scaling.main([*argv, "--bin-um", "16", "8"])
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in table.splitlines() if line.startswith("| ")}
    assert "16 um: 100 bins per section" in table and "8 um: 400 bins per section" in table
    # per size: seconds, peak RSS, peak anonymous RSS, how
    assert [rows[stage][3].strip() for stage in ("ingestion", "graph", "train", "predict")] == ["MEASURED"] * 4
    for stage in ("ingestion", "graph", "train", "predict"):
        rss, anonymous = (float(rows[stage][i].replace(",", "")) for i in (1, 2))
        assert 0 < anonymous <= rss
    assert rows["embedding"][3].strip().startswith("ESTIMATED from 4 bins")
    assert rows["retrieval"][3].strip().startswith("ESTIMATED: L1 search timed on a sample, scaled to 6 section pairs")
    # above --graph-max-bins the graph stage is not run; a generated store lets training and prediction be measured
    assert rows["graph"][4].strip() == "not run" and rows["graph"][7].strip().startswith("NOT RUN (holds whole")
    assert [rows[stage][7].strip() for stage in ("ingestion", "predict")] == ["MEASURED"] * 2
    # 8 um trained 2 of its 32 tiles (2 sections of 400 bins in tiles of at most 40): the epoch time is estimated
    assert rows["train"][7].strip().startswith("peak RSS MEASURED over 2 of 32 tile steps")
    assert "train" in table.split("Growth exponents")[1] and "graph" not in table.split("Growth exponents")[1]
    # rows are kept: a second run with --reuse measures nothing again
    again = visium_hd_scaling.main([*argv, "--bin-um", "16", "--stages", "ingestion", "--reuse"])
    assert (
        rows["ingestion"][:3]
        == {line.split("|")[1].strip(): line.split("|")[2:-1] for line in again.splitlines() if line.startswith("| ")}[
            "ingestion"
        ][:3]
    )


def test_visium_hd_gpu_measures_an_epoch_and_a_prediction_and_scales_the_search_by_its_terms():
    from benchmarks import visium_hd_gpu

    args = visium_hd_gpu.parse_args(
        ["--device", "cpu", "--sizes", "300", "--dim", "8", "--genes", "6", "--tile", "150", "--chunk", "100"]
        + ["--retrieval-sample", "16", "--encoders", "efficientnet_lite0", "--image-bins", "100", "--patches", "8"]
        + ["--batch-size", "4", "--raw-batches", "1", "--num-workers", "0"]
    )
    row = visium_hd_gpu.stage_rows(300, args)
    side = 18  # demo_hd's even lattice side for about 300 bins
    assert row["bins"] == side * side and row["predicted_shape"] == (side * side, 6)
    # the fold's 6 cross-section pairs (HD1, HD2 -> HD3, HD4; HD3 <-> HD4) and each graph's reference kNN
    assert row["pairs"] == 6 and row["graphs"] == 4
    assert row["cross_section"] == 6 * side * side * side * side * 8
    # 2 training sections, each halved until tiles hold at most 150 of its 324 bins: 4 tiles each
    assert row["steps"] == 8
    assert row["search_s"] == pytest.approx(
        row["search"].seconds / (16 * side * side * 8) * (row["cross_section"] + row["close"])
    )
    embedding = visium_hd_gpu.embedding_rows(args)
    assert [(r["encoder"], r["patches"]) for r in embedding] == [("efficientnet_lite0", 8)]
    assert embedding[0]["raw"] > 0 and embedding[0]["e2e"] > 0
    table = visium_hd_gpu.report(embedding, [(300, row), (400_000, "RuntimeError: out of memory")], args)
    assert "| efficientnet_lite0 |" in table
    assert f"| {side * side} | training epoch |" in table and "MEASURED: 8 tile steps + the validation pass" in table
    assert "| 400,000 requested | all | | | | FAILED: RuntimeError: out of memory |" in table
    assert "ESTIMATED from 16 queries x 324 candidates" in table


def test_visium_hd_gpu_keeps_the_other_parts_when_one_fails(capsys):
    from benchmarks import visium_hd_gpu

    table = visium_hd_gpu.main(["--device", "cpu", "--sizes", "--encoders", "no_such_encoder"])
    assert "Embedding: FAILED (" in table and "no_such_encoder" in table
    assert "[embedding] FAILED:" in capsys.readouterr().out


def test_measure_counts_a_mapped_file_in_rss_but_not_in_its_anonymous_part(tmp_path):
    import mmap

    from benchmarks import common

    mib = 64
    np.save(tmp_path / "store.npy", np.ones(mib * 2**20 // 8))
    anonymous_before = common.current_memory_mib()[1]
    with common.measure() as mapped:
        store = np.load(tmp_path / "store.npy", mmap_mode="r")
        assert store.sum() == mib * 2**20 // 8  # every page read
    assert mapped.peak_rss_mib - mapped.rss_before_mib > 0.9 * mib
    assert mapped.peak_anonymous_mib - anonymous_before < 0.25 * mib
    anonymous_before = common.current_memory_mib()[1]
    with common.measure() as allocated:
        # A fresh anonymous mapping: np.ones could reuse pages the allocator kept resident from earlier tests.
        held = mmap.mmap(-1, mib * 2**20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        np.frombuffer(held, dtype=np.uint8)[:] = 1
    assert allocated.peak_anonymous_mib - anonymous_before > 0.9 * mib
    assert allocated.peak_rss_mib - allocated.rss_before_mib > 0.9 * mib
    del store
    held.close()


def test_mutation_results_made_from_an_older_source_are_not_read_as_the_current_ones(tmp_path):
    import os

    from benchmarks import mutation

    mutated, source = tmp_path / "mutants" / "pkg" / "mod.py", tmp_path / "src" / "pkg" / "mod.py"
    for path in (mutated, source):
        path.parent.mkdir(parents=True)
        path.write_text("x = 1\n")
    os.utime(mutated, (1_000, 1_000))
    os.utime(source, (2_000, 2_000))
    assert mutation.made_before_source("pkg/mod.py", tmp_path / "mutants", tmp_path / "src")
    os.utime(mutated, (3_000, 3_000))
    assert not mutation.made_before_source("pkg/mod.py", tmp_path / "mutants", tmp_path / "src")
    # no mutated copy (mutmut never ran on it) or no source: nothing to hold back
    assert not mutation.made_before_source("pkg/other.py", tmp_path / "mutants", tmp_path / "src")
