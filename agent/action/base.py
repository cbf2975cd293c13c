"""What every action shares: its argument declaration, the services it may use, its error type."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from boshlab.dav import DavClient, DavConfig

from ..applier import Applier
from ..heartbeat import Publisher
from ..jobsupervisor import JobSupervisor
from ..paths import Paths
from ..settings import SettingsService
from ..spec import SpecStore
from ..tasks import TaskManager
from ..vitals import Vitals


class ActionError(Exception):
    """An action failed; the dispatcher answers ``Action Failed <method>: <message>``."""


@dataclass(frozen=True)
class Arg:
    """One positional argument: ``label`` names it in errors; ``kind`` is the JSON type it must have."""
    label: str
    kind: type
    required: bool = True
    nullable: bool = False


@dataclass
class Services:
    """Everything an action may use (built once at boot)."""
    paths: Paths
    settings: SettingsService
    specs: SpecStore
    supervisor: JobSupervisor
    applier: Applier
    tasks: TaskManager
    mbus: Publisher
    vitals: Vitals

    @property
    def agent_id(self) -> str:
        return self.settings.settings["agent_id"]

    def blobstore(self) -> DavClient:
        """A DAV client with the agent's own blobstore credentials (settings ``blobstore.options``)."""
        return blobstore_client(self.settings)


def blobstore_client(settings: SettingsService) -> DavClient:
    return DavClient(DavConfig.from_options(settings.settings["blobstore"]["options"]))



class Action(ABC):
    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    args: ClassVar[tuple[Arg, ...]] = ()
    cancelable: ClassVar[bool] = False

    def __init__(self, services: Services) -> None:
        self.services = services

    def is_async(self, protocol: int) -> bool:
        return False

    @abstractmethod
    async def run(self, *args: Any) -> Any:
        """Run with the checked arguments (optional ones left out when not sent)."""
