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


def test_a_group_node_shows_its_code_and_pickles_into_a_fresh_process():
    import inspect
    import pickle
    import subprocess
    import sys

    from spahgc_kedro.parallelism import group_function, group_nodes
    from spahgc_kedro.pipelines.train.nodes import train_fold_group

    inputs = ["section_graphs", "folds", "fold_models", "params:train", "params:dataset", "params:encoder"]
    nodes = group_nodes(train_fold_group, inputs, "trained_models", "train_fold_group", 3)
    assert [n.name for n in nodes] == [f"train_fold_group_{g}" for g in range(3)]
    func = nodes[1].func
    # what kedro-viz shows: the node function's own code and file
    assert inspect.isfunction(func) and inspect.getsource(func).startswith("def train_fold_group(")
    assert inspect.getfile(func) == inspect.getfile(train_fold_group)
    signature = inspect.signature(func)
    assert signature.parameters["group"].default == 1 and signature.parameters["groups"].default == 3
    assert group_function(train_fold_group, 1, 3) is func
    # a spawned worker has not built the pipelines: it rebuilds the function from its name
    code = (
        "import pickle, sys, inspect; f = pickle.loads(sys.stdin.buffer.read()); "
        "p = inspect.signature(f).parameters; print(f.__name__, p['group'].default, p['groups'].default)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps(func), capture_output=True, check=True, timeout=120
    )
    assert result.stdout.decode().split() == ["train_fold_group", "1", "3"]
    with pytest.raises(TypeError, match="needs `group` and `groups`"):
        group_function(group_count, 0, 1)
