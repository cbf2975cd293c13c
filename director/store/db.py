"""The sqlite connection: every query runs in one thread of its own (sqlite blocks), serialised by a lock.

Only the repositories beside this module write SQL; everything else asks them for typed rows."""
from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
Row = dict[str, Any]

SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
  name TEXT NOT NULL, version TEXT NOT NULL, manifest TEXT NOT NULL, created_at REAL NOT NULL,
  PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS release_jobs (
  release TEXT NOT NULL, release_version TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
  fingerprint TEXT NOT NULL, sha1 TEXT NOT NULL, blobstore_id TEXT NOT NULL,
  spec TEXT NOT NULL, monit TEXT NOT NULL, templates TEXT NOT NULL,
  PRIMARY KEY (release, release_version, name));
CREATE TABLE IF NOT EXISTS release_packages (
  release TEXT NOT NULL, release_version TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
  fingerprint TEXT NOT NULL, sha1 TEXT NOT NULL, blobstore_id TEXT NOT NULL, dependencies TEXT NOT NULL,
  PRIMARY KEY (release, release_version, name));
CREATE TABLE IF NOT EXISTS compiled_packages (
  name TEXT NOT NULL, fingerprint TEXT NOT NULL, stemcell TEXT NOT NULL, dependency_key TEXT NOT NULL,
  build INTEGER NOT NULL, version TEXT NOT NULL, sha1 TEXT NOT NULL, blobstore_id TEXT NOT NULL,
  created_at REAL NOT NULL,
  PRIMARY KEY (fingerprint, stemcell, dependency_key));
CREATE TABLE IF NOT EXISTS deployments (
  name TEXT PRIMARY KEY, manifest TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
  id TEXT PRIMARY KEY, deployment TEXT NOT NULL, group_name TEXT NOT NULL, idx INTEGER NOT NULL,
  agent_id TEXT, vm_cid TEXT, vm_name TEXT, ip TEXT, apply_spec TEXT, state TEXT NOT NULL DEFAULT 'started',
  UNIQUE (deployment, group_name, idx));
CREATE TABLE IF NOT EXISTS tasks (
  id INTEGER PRIMARY KEY AUTOINCREMENT, state TEXT NOT NULL, description TEXT NOT NULL,
  deployment TEXT, result TEXT, started_at REAL NOT NULL, ended_at REAL, user TEXT NOT NULL DEFAULT 'admin');
CREATE TABLE IF NOT EXISTS registry (
  instance_id TEXT PRIMARY KEY, settings TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS resurrection (
  deployment TEXT PRIMARY KEY, enabled INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS disks (
  cid TEXT PRIMARY KEY, deployment TEXT NOT NULL, instance_id TEXT, instance TEXT NOT NULL DEFAULT '',
  size INTEGER NOT NULL, orphaned INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, orphaned_at REAL);
CREATE TABLE IF NOT EXISTS faults (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, deployment TEXT, instance_id TEXT, instance TEXT, target TEXT NOT NULL,
  state TEXT NOT NULL, details TEXT NOT NULL DEFAULT '{}', message TEXT NOT NULL DEFAULT '',
  created_at REAL NOT NULL, undone_at REAL, undo_message TEXT);
"""

# Columns added after the first schema: a volume kept from an older lab gets them on open.
MIGRATIONS = [
    ("instances", "networks", "TEXT"),                      # {"<manifest network>": {"ip", "range"}}
    ("instances", "dirty", "INTEGER NOT NULL DEFAULT 0"),   # an update started and did not finish
    ("instances", "vm_created_at", "REAL"),
    ("deployments", "releases", "TEXT NOT NULL DEFAULT '{}'"),  # {"<release>": "<resolved version>"}
    ("registry", "user", "TEXT"),                           # the one VM's credentials for its own settings
    ("registry", "password", "TEXT"),
    ("instances", "configuration_hash", "TEXT"),            # the apply spec's, readable without parsing the spec
]
# Filling a column added above from what the rows already hold (run once, when the column is added).
BACKFILL = {
    ("instances", "configuration_hash"):
        "UPDATE instances SET configuration_hash=json_extract(apply_spec, '$.configuration_hash') "
        "WHERE apply_spec IS NOT NULL AND json_valid(apply_spec)",
}

Statement = tuple[str, tuple[Any, ...]]


class Database:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        # One thread of its own: queries never wait behind other blocking work (Docker calls, file I/O).
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        # Writes made through this connection (execute, transaction: every write goes through one of them): a
        # reader that keeps what it read (Instances.all, the watch's names) reads again only when this moved.
        self.changes = 0

    def _thread(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def open(self) -> None:
        def go() -> None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(SCHEMA)
            for table, column, decl in MIGRATIONS:
                have = {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
                    fill = BACKFILL.get((table, column))
                    if fill:
                        try:
                            conn.execute(fill)
                        except sqlite3.OperationalError:    # an sqlite without JSON: read from the spec instead
                            pass
            self._conn = conn
        await self._thread(go)

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._thread(conn.close)
        self._pool.shutdown(wait=False)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._conn is not None, "database is not open"
        with self._lock:
            return fn(self._conn)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._thread(self._call, fn)

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        def go(c: sqlite3.Connection) -> int:
            cur = c.execute(sql, params)
            return int(cur.lastrowid or cur.rowcount)
        try:
            return await self.run(go)
        finally:
            self.changes += 1

    async def all(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        def go(c: sqlite3.Connection) -> list[Row]:
            cur = c.cursor()
            cur.row_factory = None          # plain tuples zipped with the column names: a third cheaper than Row
            cur.execute(sql, params)
            cols = [d[0] for d in cur.description or ()]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        return await self.run(go)

    async def tuples(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows as plain tuples, in the order of the SELECT's columns (for thousands of rows: no dicts)."""
        def go(c: sqlite3.Connection) -> list[tuple[Any, ...]]:
            cur = c.cursor()
            cur.row_factory = None
            return cur.execute(sql, params).fetchall()
        return await self.run(go)

    async def one(self, sql: str, params: tuple[Any, ...] = ()) -> Row | None:
        def go(c: sqlite3.Connection) -> Row | None:
            r = c.execute(sql, params).fetchone()
            return dict(r) if r else None
        return await self.run(go)

    async def transaction(self, statements: list[Statement]) -> None:
        """Run statements all-or-nothing."""
        def go(c: sqlite3.Connection) -> None:
            c.execute("BEGIN")
            try:
                for sql, params in statements:
                    c.execute(sql, params)
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")
        try:
            await self.run(go)
        finally:
            self.changes += 1
