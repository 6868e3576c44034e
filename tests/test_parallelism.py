"""Work-group settings: read from conf when pipelines are built, validated, split disjointly."""

from __future__ import annotations

import pytest

from spahgc_kedro.parallelism import group_count, members


def _conf(root, text):
    (root / "conf" / "base").mkdir(parents=True)
    (root / "conf" / "base" / "parallelism.yml").write_text(text)


def test_group_counts_come_from_the_projects_conf(tmp_path, monkeypatch):
    _conf(tmp_path, "fold_groups: 3\nsection_groups: 5\n")
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "conf" / "local" / "parallelism.yml").write_text("fold_groups: 6\n")
    monkeypatch.chdir(tmp_path)
    assert group_count("fold_groups") == 6
    assert group_count("section_groups") == 5


def test_a_bad_group_count_names_the_file(tmp_path, monkeypatch):
    _conf(tmp_path, "fold_groups: 0\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="parallelism.yml: fold_groups must be a whole number >= 1"):
        group_count("fold_groups")


def test_members_split_sorted_keys_round_robin():
    keys = ["d", "a", "c", "b", "e"]
    parts = [members(keys, g, 3) for g in range(3)]
    assert parts == [["a", "d"], ["b", "e"], ["c"]]
    assert sorted(sum(parts, [])) == sorted(keys)
