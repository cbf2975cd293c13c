"""The director's state: sqlite behind repositories that return typed rows. No SQL outside this package."""
from __future__ import annotations

from pathlib import Path

from .db import Database
from .deployments import Deployments, Resurrection
from .disks import Disks
from .faults import FaultRecords
from .instances import Instances
from .registry import Registry
from .releases import CompiledPackages, Releases
from .rows import (
    CompiledPackageRow,
    DeploymentRow,
    DiskRow,
    FaultRow,
    InstanceRow,
    NetworkAddress,
    ReleaseJobRow,
    ReleasePackageRow,
    ReleaseRow,
    TaskRow,
)
from .tasks import Tasks

__all__ = ["Store", "Database", "CompiledPackageRow", "DeploymentRow", "DiskRow", "InstanceRow", "NetworkAddress",
           "ReleaseJobRow", "ReleasePackageRow", "ReleaseRow", "TaskRow", "Releases", "CompiledPackages",
           "Deployments", "Resurrection", "Instances", "Registry", "Tasks", "Disks", "FaultRecords", "FaultRow"]


class Store:
    """One database, one repository per kind of row."""

    def __init__(self, path: str | Path) -> None:
        self.db = Database(path)
        self.releases = Releases(self.db)
        self.compiled = CompiledPackages(self.db)
        self.deployments = Deployments(self.db)
        self.resurrection = Resurrection(self.db)
        self.instances = Instances(self.db)
        self.registry = Registry(self.db)
        self.tasks = Tasks(self.db)
        self.disks = Disks(self.db)
        self.faults = FaultRecords(self.db)

    @property
    def changes(self) -> int:
        """How many writes this director made to the store (it moves on every write)."""
        return self.db.changes

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()
