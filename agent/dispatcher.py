"""From a NATS message to a reply: the one registry of methods, argument checks, sync vs async, errors.

* not JSON (including JSON nested too deeply to parse), or no ``reply_to``: logged (WARN) and dropped, there
  is nowhere to answer;
* larger than ``max_message_bytes`` (``wire.MAX_REQUEST_BYTES``, 1 MiB): answered ``message of N bytes
  exceeds the agent's limit of M bytes`` when its ``reply_to`` can be read, else logged and dropped;
* every request is logged as the deck shows it: ``INFO: Message: {"method"=>..., "arguments"=>..., "reply_to"=>...}``;
* unknown method: ``unknown message <method>``;
* missing or wrongly typed arguments: ``Action Failed <method>: Not enough arguments, expected N, got M`` /
  ``... argument 1 (apply spec) must be an object, got a string``; extra arguments are ignored;
* async actions answer ``{"agent_task_id", "state": "running"}`` at once and run as tasks; when
  ``TaskManager.max_queued`` (100) are already waiting: ``Action Failed <method>: too many tasks queued (100)``;
* a failing sync action: ``Action Failed <method>: <error>``.
Nothing here raises: a bad message can never end the subscription.
"""
from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from boshlab import wire

from .action.base import JSON_TYPES, Action, ActionError, Services, json_type
from .log import log, ruby_inspect
from .tasks import TaskManager, TooManyTasks, describe

# The deck's fourteen (slide 10: migrate_disk, list_disk, mount_disk, unmount_disk, state, drain, apply,
# compile_package, fetch_logs, ssh, ping, start, stop, prepare_network_change), plus task control and info:
# (message, aliases, module in agent.action, class). A module is imported when its message first comes, so
# the agent's start-up does not pay for what most VMs never run (compile_package and fetch_logs bring the
# blobstore client, aiohttp, tarfile and gzip).
ACTION_TABLE: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("migrate_disk", (), "migrate_disk", "MigrateDisk"), ("list_disk", (), "list_disk", "ListDisk"),
    ("mount_disk", (), "mount_disk", "MountDisk"), ("unmount_disk", (), "unmount_disk", "UnmountDisk"),
    ("get_state", ("state",), "get_state", "GetState"), ("drain", (), "drain", "Drain"),
    ("apply", (), "apply", "Apply"), ("compile_package", (), "compile_package", "CompilePackage"),
    ("fetch_logs", (), "fetch_logs", "FetchLogs"), ("ssh", (), "ssh", "Ssh"), ("ping", (), "ping", "Ping"),
    ("start", (), "start", "Start"), ("stop", (), "stop", "Stop"),
    ("prepare_network_change", (), "prepare_network_change", "PrepareNetworkChange"),
    ("get_task", (), "get_task", "GetTask"), ("cancel_task", (), "cancel_task", "CancelTask"),
    ("info", (), "info", "Info"),
)

Reply = Callable[[str, bytes], Awaitable[None]]


def action_class(module: str, name: str) -> type[Action]:
    cls: type[Action] = getattr(importlib.import_module(f"{__package__}.action.{module}"), name)
    return cls


def __getattr__(name: str) -> tuple[type[Action], ...]:
    """``ACTIONS``: every action class, in the table's order (importing them all: tests and tools)."""
    if name == "ACTIONS":
        return tuple(action_class(module, cls) for _, _, module, cls in ACTION_TABLE)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ActionRegistry(Mapping[str, Action]):
    """Message name -> action, each action made (its module imported) when its message first comes."""

    def __init__(self, services: Services,
                 table: tuple[tuple[str, tuple[str, ...], str, str], ...] = ACTION_TABLE) -> None:
        self.services = services
        self._where = {n: (module, cls) for name, aliases, module, cls in table for n in (name, *aliases)}
        self._made: dict[tuple[str, str], Action] = {}

    def __getitem__(self, name: str) -> Action:
        where = self._where[name]
        action = self._made.get(where)
        if action is None:
            action = self._made[where] = action_class(*where)(self.services)
        return action

    async def load(self, name: str) -> Action | None:
        """The action for ``name`` (None: no such message), its module imported in a thread the first time,
        so the event loop keeps answering meanwhile."""
        where = self._where.get(name)
        if where is None:
            return None
        if where not in self._made:
            cls = await asyncio.to_thread(action_class, *where)
            self._made.setdefault(where, cls(self.services))
        return self._made[where]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def build_registry(services: Services, actions: tuple[type[Action], ...] | None = None) -> Mapping[str, Action]:
    """The agent's actions (made on first use), or just ``actions`` (made now: tests)."""
    if actions is None:
        return ActionRegistry(services)
    registry: dict[str, Action] = {}
    for cls in actions:
        action = cls(services)
        for name in (cls.name, *cls.aliases):
            registry[name] = action
    return registry


class ArgumentError(Exception):
    pass


def check_arguments(action: Action, args: list[Any]) -> list[Any]:
    """The arguments the action declares, checked; extra ones dropped, missing optional ones left out."""
    required = sum(1 for a in action.args if a.required)
    if len(args) < required:
        raise ArgumentError(f"Not enough arguments, expected {required}, got {len(args)}")
    checked = args[:len(action.args)]
    for i, (decl, value) in enumerate(zip(action.args, checked, strict=False), start=1):
        if value is None and decl.nullable:
            continue
        ok = isinstance(value, decl.kind) and not (isinstance(value, bool) and decl.kind is not bool)
        if not ok:
            raise ArgumentError(f"argument {i} ({decl.label}) must be {JSON_TYPES.get(decl.kind, decl.kind.__name__)}, "
                                f"got {json_type(value)}")
    return checked


class Dispatcher:
    def __init__(self, actions: Mapping[str, Action], tasks: TaskManager, reply: Reply,
                 max_message_bytes: int = wire.MAX_REQUEST_BYTES) -> None:
        self.actions = actions
        self.tasks = tasks
        self.reply = reply
        self.max_message_bytes = max_message_bytes

    async def handle(self, data: bytes) -> None:
        """The subscription callback: answer the message if it can be answered at all."""
        if len(data) > self.max_message_bytes:
            await self._too_large(data)
            return
        reply_to = wire.reply_to_of(data)
        if reply_to is None:
            log.warning("Dropping message that is not JSON or has no reply_to: %s",
                        data[:300].decode(errors="replace"))
            return
        try:
            payload = await self.dispatch(data)
        except Exception as e:  # noqa: BLE001 - last resort, never let the loop die
            log.exception("Handling a message failed")
            payload = wire.encode_exception(f"internal agent error: {describe(e)}")
        try:
            await self.reply(reply_to, payload)
        except Exception as e:  # noqa: BLE001
            log.error("Could not reply on %s: %s", reply_to, describe(e))

    async def _too_large(self, data: bytes) -> None:
        # Only a message up to 8x the limit is parsed to find its reply_to; anything bigger is just dropped.
        reply_to = wire.reply_to_of(data) if len(data) <= 8 * self.max_message_bytes else None
        message = f"message of {len(data)} bytes exceeds the agent's limit of {self.max_message_bytes} bytes"
        if reply_to is None:
            log.warning("Dropping %s (no reply_to to answer on)", message)
            return
        log.warning("Refusing %s", message)
        try:
            await self.reply(reply_to, wire.encode_exception(message))
        except Exception as e:  # noqa: BLE001
            log.error("Could not reply on %s: %s", reply_to, describe(e))

    async def dispatch(self, data: bytes) -> bytes:
        if len(data) > self.max_message_bytes:
            return wire.encode_exception(f"message of {len(data)} bytes exceeds the agent's limit of "
                                         f"{self.max_message_bytes} bytes")
        try:
            req = wire.decode_request(data)
        except wire.WireError as e:
            log.warning("Bad message: %s", e)
            return wire.encode_exception(str(e))
        method, args = req["method"], req["arguments"]
        log.info("Message: %s", ruby_inspect({"method": method, "arguments": args, "reply_to": req["reply_to"]}))
        actions = self.actions
        action = await actions.load(method) if isinstance(actions, ActionRegistry) else actions.get(method)
        if action is None:
            return wire.encode_exception(f"unknown message {method}")
        try:
            checked = check_arguments(action, args)
        except ArgumentError as e:
            return self._failed(method, str(e))
        if action.is_async(req.get("protocol", 0)):
            try:
                task = self.tasks.submit(method, lambda: action.run(*checked), action.cancelable)
            except TooManyTasks as e:
                return self._failed(method, str(e))
            log.info("Running async action %s as task %s", method, task.id)
            return wire.encode_value(wire.task_running(task.id))
        try:
            value = await action.run(*checked)
        except ActionError as e:
            return self._failed(method, str(e))
        except Exception as e:  # noqa: BLE001 - a bug in an action answers, it does not crash the agent
            log.exception("Action %s crashed", method)
            return self._failed(method, describe(e))
        return wire.encode_value(value)

    def _failed(self, method: str, message: str) -> bytes:
        log.error("Action Failed %s: %s", method, message)
        return wire.encode_exception(f"Action Failed {method}: {message}")
