"""Agent settings, 2013 style: user data names a registry, the registry serves the settings (protocol.md §5).

* User data: ``/var/vcap/bosh/user_data.json``, written by the Docker CPI before the container starts:
  ``{"registry": {"endpoint": "http://<user>:<password>@director:25889"}, "instance_id": "<vm cid>",
  "server": {"name": "<vm name>"}}``.
* Registry: ``GET <endpoint>/instances/<instance_id>/settings`` with basic auth (the credentials of the
  endpoint URL, sent as an Authorization header) answers ``{"settings": "<settings as a JSON string>"}``.
* Settings are cached in ``/var/vcap/bosh/settings.json``; the cache is used when the registry stays
  unreachable on a later boot.

The shapes (``UserData``, ``Settings``, ``RegistryReply``...) are the shared ones of ``boshlab.contracts``.
"""
from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit, urlunsplit

from boshlab.contracts import BlobstoreSettings as BlobstoreSettings
from boshlab.contracts import DiskSettings as DiskSettings
from boshlab.contracts import NetworkSpec as NetworkSpec
from boshlab.contracts import Settings as Settings
from boshlab.contracts import UserData as UserData
from boshlab.httpauth import basic_auth, redact_url

from . import httpclient
from .log import log, ruby_inspect
from .paths import Paths

DEFAULT_HEARTBEAT_INTERVAL = 30.0


class SettingsError(Exception):
    pass


# --- parsing ---------------------------------------------------------------------------------------

def parse_user_data(raw: str) -> UserData:
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as e:
        raise SettingsError(f"user data is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise SettingsError("user data must be a JSON object")
    registry = doc.get("registry")
    if not isinstance(registry, dict) or not isinstance(registry.get("endpoint"), str) or not registry["endpoint"]:
        raise SettingsError("user data has no registry.endpoint")
    if not isinstance(doc.get("instance_id"), str) or not doc["instance_id"]:
        raise SettingsError("user data has no instance_id")
    return cast(UserData, doc)


def parse_settings(doc: Any) -> Settings:
    """Check the keys the agent relies on; everything else is kept as sent."""
    if not isinstance(doc, dict):
        raise SettingsError("settings must be a JSON object")
    for key in ("agent_id", "mbus"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise SettingsError(f"settings have no {key}")
    bs = doc.get("blobstore")
    if not isinstance(bs, dict) or not isinstance(bs.get("options"), dict):
        raise SettingsError("settings have no blobstore.options")
    if bs.get("provider") != "dav":
        raise SettingsError(f"blobstore provider {bs.get('provider')!r} is not supported (only dav)")
    return cast(Settings, doc)


def heartbeat_interval(settings: Settings) -> float:
    """``env.bosh.heartbeat_interval`` seconds (the lab's knob for short heartbeats in tests), default 30."""
    bosh = settings.get("env", {}).get("bosh")
    value = bosh.get("heartbeat_interval") if isinstance(bosh, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return DEFAULT_HEARTBEAT_INTERVAL


def infrastructure_summary(settings: Settings) -> str:
    """The deck's ``loaded new infrastructure settings: {"networks"=>..., "disks"=>..., ...}``, with the mbus
    and blobstore passwords masked (each VM has NATS credentials of its own: they stay out of logs)."""
    shown: dict[str, Any] = {k: settings.get(k) for k in ("networks", "disks", "blobstore", "mbus")}
    if isinstance(shown["mbus"], str):
        shown["mbus"] = redact_url(shown["mbus"])
    blobstore = shown["blobstore"]
    if isinstance(blobstore, dict) and isinstance(blobstore.get("options"), dict) and "password" in blobstore["options"]:
        shown["blobstore"] = dict(blobstore, options=dict(blobstore["options"], password="***"))
    return ruby_inspect(shown)


def split_endpoint(endpoint: str) -> tuple[str, dict[str, str]]:
    """``http://u:p@host:port/x`` -> (``http://host:port/x``, the basic-auth header for u:p, if any)."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"registry endpoint {endpoint!r} is not an http(s) URL")
    netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    if ":" in parts.hostname:  # IPv6 literal
        netloc = f"[{parts.hostname}]" + ("" if parts.port is None else f":{parts.port}")
    auth = {} if parts.username is None else basic_auth(unquote(parts.username), unquote(parts.password or ""))
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")), auth


# --- fetching --------------------------------------------------------------------------------------

async def fetch_from_registry(user_data: UserData, timeout: float = 10.0) -> Settings:
    base, auth = split_endpoint(user_data["registry"]["endpoint"])
    url = f"{base}/instances/{user_data['instance_id']}/settings"
    resp = await httpclient.request("GET", url, headers=auth, timeout=timeout)
    body = resp.text()
    if resp.status != 200:
        raise SettingsError(f"registry answered {resp.status} for {url}: {body[:200]}")
    try:
        doc = json.loads(body)
        inner = doc["settings"]
        settings = json.loads(inner) if isinstance(inner, str) else inner
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise SettingsError(f"registry reply from {url} is not {{\"settings\": \"<json>\"}}: {e}") from None
    return parse_settings(settings)


Fetcher = Callable[[UserData], Awaitable[Settings]]


class SettingsService:
    """Loads settings (registry first, cache as a fallback) and keeps the current ones."""

    def __init__(self, paths: Paths, fetcher: Fetcher = fetch_from_registry,
                 attempts: int = 60, retry_delay: float = 1.0) -> None:
        self.paths = paths
        self.fetcher = fetcher
        self.attempts = attempts
        self.retry_delay = retry_delay
        self._settings: Settings | None = None
        self.user_data: UserData | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            raise SettingsError("settings are not loaded yet")
        return self._settings

    def read_user_data(self) -> UserData:
        try:
            raw = self.paths.user_data.read_text()
        except OSError as e:
            raise SettingsError(f"cannot read user data {self.paths.user_data}: {e.strerror}") from None
        log.info("Docker user data: %s", ruby_inspect(raw.strip()))
        self.user_data = parse_user_data(raw)
        return self.user_data

    async def fetch(self, attempts: int | None = None) -> Settings:
        """Read the user data and ask the registry, retrying every ``retry_delay`` s; each failure is logged."""
        tries = attempts or self.attempts
        last: Exception | None = None
        for attempt in range(1, tries + 1):
            try:
                return await self.fetcher(self.user_data or self.read_user_data())
            except (TimeoutError, SettingsError, OSError) as e:
                last = e
                log.warning("Fetching settings from the registry failed (attempt %d/%d): %s",
                            attempt, tries, describe_error(e))
                if attempt < tries:
                    await asyncio.sleep(self.retry_delay)
        raise SettingsError(f"could not fetch settings from the registry after {tries} attempts: "
                            f"{describe_error(last)}")

    async def load(self) -> Settings:
        """Registry, else the cache of a previous boot, else SettingsError."""
        try:
            settings = await self.fetch()
        except SettingsError as e:
            cached = self.read_cache()
            if cached is None:
                raise
            log.warning("%s; using the cached settings in %s", e, self.paths.settings)
            settings = cached
        self.use(settings)
        return settings

    async def reload(self, attempts: int = 3) -> Settings:
        """``mount_disk``: read the settings again from the registry (the director may have attached a disk
        since boot), keeping the cache. On failure the current settings stay and SettingsError says why."""
        settings = await self.fetch(attempts)
        self.use(settings)
        return settings

    async def refresh(self, attempts: int = 3) -> Settings:
        """``prepare_network_change``: drop the cache and read the settings again."""
        self.paths.settings.unlink(missing_ok=True)
        try:
            settings = await self.fetch(attempts)
        except SettingsError:
            if self._settings is not None:
                self.write_cache(self._settings)  # keep running on what we had
            raise
        self.use(settings)
        return settings

    def use(self, settings: Settings) -> None:
        self._settings = settings
        self.write_cache(settings)
        log.info("loaded new infrastructure settings: %s", infrastructure_summary(settings))

    def read_cache(self) -> Settings | None:
        try:
            return parse_settings(json.loads(self.paths.settings.read_text()))
        except (OSError, json.JSONDecodeError, SettingsError):
            return None

    def write_cache(self, settings: Settings) -> None:
        write_json_atomic(self.paths.settings, settings, mode=0o600)


def describe_error(e: BaseException | None) -> str:
    if e is None:
        return "unknown error"
    text = str(e) or type(e).__name__
    return text if isinstance(e, SettingsError) else f"{type(e).__name__}: {text}"


def write_json_atomic(path: Path, doc: Any, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as f:
        json.dump(doc, f)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
