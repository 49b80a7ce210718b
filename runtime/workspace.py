"""Workspaces: named blob stores, plus the nets created in them.

A blob holds a numpy array (a Caffe2 tensor), ``bytes`` (a Caffe2 string), or any other Python
object (DB readers, Python-op state). Several workspaces may exist; one is current.
"""
from __future__ import annotations

import os
from typing import Any, Iterator

from netjit.runtime.errors import BlobNotFound, NetJitError


class Workspace:
    """A blob store with a root folder (the base of relative DB paths and Print/Summarize logs).

    >>> ws = Workspace("demo"); ws.feed("x", b"hi"); ws.fetch("x")
    b'hi'
    """

    def __init__(self, name: str, root_folder: str = ".", parent: "Workspace | None" = None):
        self.name = name
        self.root_folder = root_folder
        self.blobs: dict[str, Any] = {}
        self.nets: dict[str, Any] = {}
        # A child workspace (Predictor's) sees its parent's blobs unless it shadows them.
        self.parent = parent

    # Blob access ------------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        return name in self.blobs or (self.parent is not None and self.parent.has(name))

    def get(self, name: str) -> Any:
        if name in self.blobs:
            return self.blobs[name]
        if self.parent is not None:
            return self.parent.get(name)
        raise BlobNotFound(f"blob {name!r} does not exist in workspace {self.name!r}")

    def feed(self, name: str, value: Any) -> None:
        self.blobs[name] = value

    def fetch(self, name: str) -> Any:
        return self.get(name)

    def create_blob(self, name: str) -> None:
        if not self.has(name):
            self.blobs[name] = None

    def names(self) -> list[str]:
        names = list(self.blobs)
        if self.parent is not None:
            names += [n for n in self.parent.names() if n not in self.blobs]
        return sorted(names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def reset(self, root_folder: str | None = None) -> None:
        self.blobs.clear()
        self.nets.clear()
        if root_folder is not None:
            os.makedirs(root_folder, exist_ok=True)
            self.root_folder = root_folder

    def resolve_path(self, path: str, absolute: bool = False) -> str:
        """A DB or log path as Caffe2 resolves it: relative to the root folder unless absolute."""
        return path if absolute else os.path.join(self.root_folder, path)


class WorkspaceRegistry:
    """The process-wide set of named workspaces; starts with "default" as the current one."""

    def __init__(self) -> None:
        self.workspaces: dict[str, Workspace] = {"default": Workspace("default")}
        self.current: Workspace = self.workspaces["default"]

    def switch(self, name: str, create_if_missing: bool = False) -> Workspace:
        if name not in self.workspaces:
            if not create_if_missing:
                raise NetJitError(f"workspace {name!r} does not exist; pass create_if_missing=True "
                                  f"to create it (existing: {sorted(self.workspaces)})")
            self.workspaces[name] = Workspace(name, root_folder=self.current.root_folder)
        self.current = self.workspaces[name]
        return self.current


REGISTRY = WorkspaceRegistry()
