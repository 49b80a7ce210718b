"""Shared fixtures. Real models and MNIST digits live in ../shared beside the checkout; where it is
absent (a user's own clone) tests that need it skip, but under CI (CI=true) they must run."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, skipping the calling test when it is missing (failing under CI)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{path} is missing: CI must have ../shared beside the checkout")
        pytest.skip(f"{path} not found: real models/data live in ../shared beside the checkout")
    return path


@pytest.fixture
def shared_dir() -> Path:
    return shared_path()


@pytest.fixture(autouse=True)
def _fresh_default_workspace(tmp_path, monkeypatch):
    """Each test starts with an empty current workspace rooted in its own temp folder."""
    from netjit.runtime.workspace import REGISTRY, Workspace
    saved = (dict(REGISTRY.workspaces), REGISTRY.current)
    REGISTRY.workspaces.clear()
    REGISTRY.workspaces["default"] = Workspace("default", root_folder=str(tmp_path))
    REGISTRY.current = REGISTRY.workspaces["default"]
    yield
    REGISTRY.workspaces.clear()
    REGISTRY.workspaces.update(saved[0])
    REGISTRY.current = saved[1]


def pytest_collection_modifyitems(config, items):
    """Tests marked ``heavy`` (minutes each on a 2-core machine: a DenseNet-121 bundle built from an
    empty cache) are deselected unless ``NETJIT_HEAVY_TESTS=1``: CI's time budget cannot hold them,
    and a deselected test is not reported as a skip."""
    if os.environ.get("NETJIT_HEAVY_TESTS") == "1":
        return
    heavy = [item for item in items if item.get_closest_marker("heavy") is not None]
    if heavy:
        config.hook.pytest_deselected(items=heavy)
        drop = {id(item) for item in heavy}
        items[:] = [item for item in items if id(item) not in drop]
