"""The suite records which code produced its results (commit, uncommitted changes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from simulator_client.experiments.suite import code_version
from simulator_client.experiments.suite_report import _code_line


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "one")
    return repo


def test_clean_checkout_names_its_commit(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    code = code_version(repo)
    assert code == {"commit": _git(repo, "rev-parse", "HEAD"), "dirty": False}
    assert _code_line(code) == f"Code: commit {code['commit'][:10]}, no uncommitted changes."


def test_an_edited_tracked_file_marks_the_results_dirty(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "untracked.txt").write_text("results\n")  # outputs beside the code are fine
    assert code_version(repo)["dirty"] is False
    (repo / "a.py").write_text("x = 2\n")
    code = code_version(repo)
    assert code["dirty"] is True
    assert "uncommitted changes" in _code_line(code) and "**" in _code_line(code)


def test_outside_a_checkout_nothing_is_claimed(tmp_path: Path) -> None:
    assert code_version(tmp_path) == {}
    assert _code_line({}) == "Code version: not recorded."


def test_runtime_names_the_installed_numerics() -> None:
    import numpy
    import torch

    from simulator_client.experiments.suite import RUNTIME_PACKAGES, runtime_info
    from simulator_client.experiments.suite_report import _runtime_line

    info = runtime_info()
    assert set(info["packages"]) == set(RUNTIME_PACKAGES)
    assert info["packages"]["numpy"] == numpy.__version__
    assert info["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    line = _runtime_line(info)
    assert f"numpy {numpy.__version__}" in line and info["cpu"] in line
    assert _runtime_line({}) == ""
