"""What every action shares: its argument declaration, the services it may use, its error type."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..applier import Applier
from ..disks import Mounter, PersistentDisks
from ..heartbeat import Publisher
from ..jobsupervisor import JobSupervisor
from ..paths import Paths
from ..settings import SettingsService
from ..spec import SpecStore
from ..tasks import TaskManager
from ..users import UserAdmin
from ..vitals import Vitals

if TYPE_CHECKING:   # boshlab.dav brings aiohttp: imported when a blob is fetched, not at boot
    from boshlab.dav import DavClient

JSON_TYPES: dict[type, str] = {dict: "an object", list: "an array", str: "a string", int: "an integer",
                               float: "a number", bool: "a boolean"}


def json_type(value: Any) -> str:
    """A JSON value's type as the error messages name it: ``an object``, ``a string``, ``null``..."""
    if value is None:
        return "null"
    for t in (bool, dict, list, str, int, float):
        if isinstance(value, t):
            return JSON_TYPES[t]
    return type(value).__name__


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
    mounter: Mounter     # mount(8), for persistent disks
    users: UserAdmin     # useradd/userdel and the host key, for ssh

    @property
    def agent_id(self) -> str:
        return self.settings.settings["agent_id"]

    def disks(self) -> PersistentDisks:
        return PersistentDisks(self.paths, self.settings, self.mounter)

    def blobstore(self) -> DavClient:
        """A DAV client with the agent's own blobstore credentials (settings ``blobstore.options``)."""
        return blobstore_client(self.settings)


def blobstore_client(settings: SettingsService) -> DavClient:
    from boshlab.dav import DavClient, DavConfig
    return DavClient(DavConfig.from_options(dict(settings.settings["blobstore"]["options"])))


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
