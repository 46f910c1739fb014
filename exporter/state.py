"""The state store: what must survive a restart, in SQLite from the standard library.

Drift-since timestamps (so an alert's clock does not restart with the exporter), each
tag's last decided upstream state (so a restart while its registry is unreachable does not
forget a drift),
content-addressed registry documents (so a changed digest costs one GET, once), tag lists
and what their candidate tags hold (read once per versions.interval, restarts included), the
last snapshot each source saved (for ``report``), and when each local tag was first seen
naming its image ID (where the engine records no LastTagTime). The in-memory dictionaries are
the truth; SQLite is written through.

No one failure costs more than it must:

- Each table is read on its own. A file that is corrupt, or has a table that cannot be read,
  is moved aside (``state.db.corrupt-<UTC time>``, logged once) and a fresh file gets every
  table that could be read: an intact drift-since survives a corrupt documents table.
- A file that is locked by another process, read-only or cannot be created leaves the store
  in memory for now (``persistent`` is False, logged once) and is tried again in the
  background with back-off. When it opens, what it holds and what was learnt meanwhile are
  merged (the earlier drift-since wins; deletions made meanwhile are applied) and written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from exporter import backoff
from exporter.decisions.tagged import TagSeen

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS drift (image TEXT PRIMARY KEY, since REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tags (
    image TEXT PRIMARY KEY, digest TEXT NOT NULL, changed REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tag_lists (
    repository TEXT PRIMARY KEY, read REAL NOT NULL, tags TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (
    tag TEXT PRIMARY KEY, platform TEXT NOT NULL, has_platform INTEGER NOT NULL,
    created REAL, checked REAL NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (
    name TEXT PRIMARY KEY, taken REAL NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    digest TEXT PRIMARY KEY, media_type TEXT NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pulled (repository TEXT PRIMARY KEY, seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS verdicts (
    image TEXT PRIMARY KEY, image_id TEXT NOT NULL, status TEXT NOT NULL, checked REAL NOT NULL,
    upstream_digest TEXT NOT NULL, upstream_config TEXT NOT NULL,
    upstream_manifest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tag_seen (
    tag TEXT PRIMARY KEY, image TEXT NOT NULL, seen REAL NOT NULL, after REAL NOT NULL);
"""
MAX_DOCUMENT = 4 * 1024 * 1024
# Documents are kept up to this many bytes in all, the oldest dropped first: content-addressed,
# a dropped one costs one GET if it is ever wanted again.
MAX_DOCUMENTS_BYTES = 32 * 1024 * 1024
# How long a statement waits for another process's lock: at start (bounded, then the file is
# tried again in the background) and on every write.
LOCK_WAIT = 2.0
RETRY_BASE = 1.0  # background retries of an unusable file: doubling from here ...
RETRY_CAP = 60.0  # ... up to this


def default_path() -> str:
    """$STATE_DIRECTORY (systemd), else $XDG_STATE_HOME, else ~/.local/state."""
    base = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if not base:
        base = os.path.join(os.environ.get("XDG_STATE_HOME")
                            or os.path.expanduser("~/.local/state"), "docker-hygiene-exporter")
    return os.path.join(base, "state.db")


class Verdict(NamedTuple):
    """The upstream state a check last decided for a tag (local mode): shown while later
    checks cannot decide, also after a restart, as long as the tag names the same image."""

    image_id: str
    status: str  # current, drifted or platform_unchanged
    checked: float
    upstream_digest: str
    upstream_config: str
    upstream_manifest: str


@dataclass(frozen=True)
class _Table:
    name: str  # the table, and the StateStore attribute holding it in memory
    columns: tuple[str, ...]  # the key first
    decode: Callable[[tuple[Any, ...]], Any]  # a row without its key -> the value kept

    @property
    def select(self) -> str:
        order = " ORDER BY rowid" if self.name == "documents" else ""
        return f"SELECT {', '.join(self.columns)} FROM {self.name}{order}"

    @property
    def upsert(self) -> str:
        marks = ", ".join("?" * len(self.columns))
        return f"INSERT OR REPLACE INTO {self.name} ({', '.join(self.columns)}) VALUES ({marks})"

    @property
    def delete(self) -> str:
        return f"DELETE FROM {self.name} WHERE {self.columns[0]} = ?"


_TABLES = (
    _Table("drift", ("image", "since"), lambda r: float(r[0])),
    _Table("tags", ("image", "digest", "changed"), lambda r: (str(r[0]), float(r[1]))),
    _Table("tag_lists", ("repository", "read", "tags"), lambda r: (float(r[0]), str(r[1]))),
    _Table("candidates", ("tag", "platform", "has_platform", "created", "checked"),
           lambda r: (str(r[0]), bool(r[1]), r[2], float(r[3]))),
    _Table("snapshots", ("name", "taken", "body"), lambda r: (float(r[0]), str(r[1]))),
    _Table("documents", ("digest", "media_type", "body"), lambda r: (str(r[0]), bytes(r[1]))),
    _Table("pulled", ("repository", "seen"), lambda r: float(r[0])),
    _Table("verdicts", ("image", "image_id", "status", "checked", "upstream_digest",
                        "upstream_config", "upstream_manifest"),
           lambda r: Verdict(str(r[0]), str(r[1]), float(r[2]), str(r[3]), str(r[4]),
                             str(r[5]))),
    _Table("tag_seen", ("tag", "image", "seen", "after"),
           lambda r: TagSeen(str(r[0]), float(r[1]), float(r[2]))),
)


def _row(key: str, value: Any) -> tuple[Any, ...]:
    if isinstance(value, TagSeen):
        return key, value.image, value.seen, value.after
    return (key, *value) if isinstance(value, tuple) else (key, value)


class _Unusable(Exception):
    """The file cannot be used right now (locked, read-only, not creatable): try again."""


def _kind(exc: sqlite3.Error) -> str:
    """"locked"; "corrupt" (the file or a table's pages); "shape" (SQLITE_ERROR: a table
    whose columns are not ours); "other" (I/O, permissions, read-only, cannot open)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else -1
    if primary in (5, 6):  # SQLITE_BUSY, SQLITE_LOCKED
        return "locked"
    if primary in (11, 26):  # SQLITE_CORRUPT, SQLITE_NOTADB
        return "corrupt"
    return "shape" if primary == 1 else "other"


def _empty() -> dict[str, dict[str, Any]]:
    return {t.name: {} for t in _TABLES}


def _read_file(path: str, wait: float
               ) -> tuple[sqlite3.Connection, dict[str, dict[str, Any]], list[str]]:
    """Open ``path`` and read every table on its own: (connection, what each readable table
    holds, the problems that make the file corrupt). Raises _Unusable when the file cannot
    be used now, closing what it opened."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, timeout=wait)
    except (OSError, sqlite3.Error) as exc:
        raise _Unusable(str(exc)) from None
    found, problems = _empty(), []
    try:
        try:
            present = {str(n) for (n,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error as exc:
            if _kind(exc) != "corrupt":
                raise
            return db, found, [f"the file: {exc}"]
        for table in _TABLES:
            if table.name not in present:
                continue  # created empty
            try:
                found[table.name] = {str(r[0]): table.decode(r[1:])
                                     for r in db.execute(table.select)}
            except sqlite3.Error as exc:
                if _kind(exc) not in ("corrupt", "shape"):
                    raise
                problems.append(f"table {table.name}: {exc}")
            except (ValueError, TypeError) as exc:  # a value of the wrong type
                problems.append(f"table {table.name}: {exc}")
        if problems:
            return db, found, problems
        try:  # the tables read; their indexes and the free list may still be damaged
            verdict = db.execute("PRAGMA quick_check(1)").fetchone()
            if verdict is None or verdict[0] != "ok":
                problems.append("quick_check: " + " ".join(
                    str(verdict[0] if verdict else "no answer").split()))
        except sqlite3.Error as exc:
            if _kind(exc) != "corrupt":
                raise
            problems.append(f"quick_check: {exc}")
        return db, found, problems
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            db.close()
        raise _Unusable(f"{_kind(exc)}: {exc}") from None


class StateStore:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.drift: dict[str, float] = {}
        self.documents: dict[str, tuple[str, bytes]] = {}  # oldest first
        self._document_bytes = 0
        self.tags: dict[str, tuple[str, float]] = {}
        self.tag_lists: dict[str, tuple[float, str]] = {}
        self.candidates: dict[str, tuple[str, bool, float | None, float]] = {}
        self.snapshots: dict[str, tuple[float, str]] = {}
        self.pulled: dict[str, float] = {}  # repository -> when this host was seen pulling it
        self.verdicts: dict[str, Verdict] = {}  # tag -> its last decided upstream state
        self.tag_seen: dict[str, TagSeen] = {}  # tag -> the image ID it names, since when
        # Keys deleted from memory while the file could not be written: applied to what the
        # file holds when it opens again. (Documents are not tracked: a stale one is harmless.)
        self._deleted: dict[str, set[str]] = {t.name: set() for t in _TABLES}
        # Rows put with ``later``, written by ``flush``: a commit waits for the disk (1.6 ms
        # measured here) while holding the lock, so a cycle's verdicts go in one commit.
        self._later: dict[str, dict[str, Any]] = {}
        self._offline_reason = ""  # why the file is not written to, when it is not
        self._closed = False
        self._stop = threading.Event()
        self._retrying = False
        if path:
            self._attempt()

    @property
    def persistent(self) -> bool:
        """True while the file is open and its last write succeeded."""
        return self._db is not None

    # -- opening, and opening again -----------------------------------------------------------

    def _attempt(self) -> bool:
        """Open the file, merge what it holds with memory and write the result. True when the
        store is persistent afterwards."""
        assert self.path is not None
        try:
            db, found, problems = _read_file(self.path, LOCK_WAIT)
        except _Unusable as exc:
            with self._lock:
                self._offline(str(exc))
            return False
        with self._lock:
            if self._closed:
                db.close()
                return False
            try:
                in_file = found
                if problems:
                    db.close()
                    db, in_file = self._start_afresh(problems, found), _empty()
                db.executescript(_SCHEMA)
                db.execute("PRAGMA user_version = 1")  # a write: says whether writes work
                merged = self._merged(found)
                self._write_back(db, in_file, merged)
                db.commit()
            except (sqlite3.Error, OSError) as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
                self._offline(str(exc))
                return False
            for table in _TABLES:
                memory: dict[str, Any] = getattr(self, table.name)
                memory.clear()
                memory.update(merged[table.name])
                self._deleted[table.name].clear()
            self._document_bytes = sum(len(b) for _, b in self.documents.values())
            self._db = db
            if self._offline_reason:
                log.warning("state store %s is written to disk again", self.path)
                self._offline_reason = ""
            return True

    def _start_afresh(self, problems: list[str], found: dict[str, dict[str, Any]]
                      ) -> sqlite3.Connection:
        """Move the corrupt file aside and open a fresh one in its place."""
        assert self.path is not None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = f"{self.path}.corrupt-{stamp}"
        n = 1
        while os.path.lexists(aside):
            n += 1
            aside = f"{self.path}.corrupt-{stamp}-{n}"
        try:
            os.replace(self.path, aside)
            for suffix in ("-journal", "-wal", "-shm"):  # a hot journal must not meet the
                if os.path.lexists(self.path + suffix):  # fresh file
                    os.replace(self.path + suffix, aside + suffix)
        except OSError as exc:
            raise OSError(f"corrupt ({'; '.join(problems)}) and cannot be moved aside: "
                          f"{exc}") from None
        kept = [f"{name} ({len(rows)} rows)" for name, rows in found.items() if rows]
        log.error("state store %s is corrupt (%s); moved it aside to %s and started a fresh "
                  "file with what could be read: %s", self.path, "; ".join(problems), aside,
                  ", ".join(kept) or "nothing")
        return sqlite3.connect(self.path, check_same_thread=False, timeout=LOCK_WAIT)

    def _merged(self, found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The file's rows, less what was deleted meanwhile, with memory on top (the earliest
        drift-since wins: it is the start of the same drift)."""
        out = {}
        for table in _TABLES:
            memory: dict[str, Any] = getattr(self, table.name)
            merged = {k: v for k, v in found[table.name].items()
                      if k not in self._deleted[table.name]}
            for key, value in memory.items():
                if table.name == "drift" and key in merged:
                    merged[key] = min(merged[key], value)
                else:
                    merged[key] = value
            out[table.name] = merged
        documents = out["documents"]
        size = sum(len(b) for _, b in documents.values())
        while size > MAX_DOCUMENTS_BYTES:
            size -= len(documents.pop(next(iter(documents)))[1])
        return out

    @staticmethod
    def _write_back(db: sqlite3.Connection, in_file: dict[str, dict[str, Any]],
                    merged: dict[str, dict[str, Any]]) -> None:
        """Make the file hold ``merged``, writing only the differences."""
        for table in _TABLES:
            old, new = in_file[table.name], merged[table.name]
            db.executemany(table.delete, [(k,) for k in old if k not in new])
            db.executemany(table.upsert, [_row(k, v) for k, v in new.items()
                                          if old.get(k) != v])

    def _offline(self, reason: str) -> None:
        """Keep state in memory only for now, and try the file again in the background.
        Called with the lock held."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        if not self._offline_reason:
            log.error("state store %s unusable, keeping state in memory only for now (tried "
                      "again in the background): %s", self.path, reason)
        self._offline_reason = reason or "unknown"
        if not self._retrying and not self._closed and self.path:
            self._retrying = True
            threading.Thread(target=self._retry, name="state-store-retry", daemon=True).start()

    def _retry(self) -> None:
        failures = 0
        try:
            while True:
                failures += 1
                wait = backoff.jittered(backoff.delay(failures, RETRY_BASE, RETRY_CAP))
                if self._stop.wait(wait) or self._attempt():
                    return
        finally:
            with self._lock:
                self._retrying = False
                # A write that failed while this attempt was succeeding needs a new retrier.
                if self._db is None and not self._closed and self._offline_reason:
                    self._retrying = True
                    threading.Thread(target=self._retry, name="state-store-retry",
                                     daemon=True).start()

    # -- writing through ----------------------------------------------------------------------

    def _execute(self, sql: str, rows: list[tuple[Any, ...]]) -> bool:
        """Run ``sql`` for each row and commit; False (and memory only) when it failed."""
        if self._db is None:
            return False
        try:
            self._db.executemany(sql, rows)
            self._db.commit()
            return True
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.rollback()
            self._offline(f"{_kind(exc)}: {exc}")
            return False

    def _put(self, table: _Table, key: str, value: Any, later: bool = False) -> None:
        getattr(self, table.name)[key] = value
        self._deleted[table.name].discard(key)
        if later:
            self._later.setdefault(table.name, {})[key] = value
        else:
            self._execute(table.upsert, [_row(key, value)])

    def flush(self) -> None:
        """Write the rows put with ``later`` (verdicts, tag digests), one commit a table. What
        could not be written stays in memory and goes to the file when it opens again."""
        with self._lock:
            later, self._later = self._later, {}
            for table in _TABLES:
                rows = later.get(table.name)
                if rows:
                    self._execute(table.upsert, [_row(k, v) for k, v in rows.items()])

    def _drop(self, table: _Table, keys: Iterable[str]) -> None:
        memory: dict[str, Any] = getattr(self, table.name)
        keys = list(keys)
        later = self._later.get(table.name, {})
        for key in keys:
            memory.pop(key, None)
            later.pop(key, None)
        if keys and not self._execute(table.delete, [(k,) for k in keys]) \
                and table.name != "documents":
            self._deleted[table.name].update(keys)

    # -- the API ------------------------------------------------------------------------------

    def drift_since(self, image: str) -> float | None:
        with self._lock:
            return self.drift.get(image)

    def set_drift_since(self, image: str, since: float) -> None:
        with self._lock:
            if image not in self.drift:
                self._put(_DRIFT, image, since)

    def clear_drift(self, image: str) -> None:
        with self._lock:
            if image in self.drift or self._db is None:
                self._drop(_DRIFT, [image])

    def document(self, digest: str) -> tuple[str, bytes] | None:
        with self._lock:
            return self.documents.get(digest)

    def put_document(self, digest: str, media_type: str, body: bytes) -> None:
        if len(body) > MAX_DOCUMENT:
            return
        with self._lock:
            if digest not in self.documents:
                self._put(_DOCUMENTS, digest, (media_type, body))
                self._document_bytes += len(body)
                oldest = []
                for key, (_, old) in self.documents.items():
                    if self._document_bytes <= MAX_DOCUMENTS_BYTES:
                        break
                    self._document_bytes -= len(old)
                    oldest.append(key)
                self._drop(_DOCUMENTS, oldest)

    def tag_digest(self, image: str) -> tuple[str, float] | None:
        """Fleet mode: the digest a tag named upstream and since when."""
        with self._lock:
            return self.tags.get(image)

    def set_tag_digest(self, image: str, digest: str, changed: float) -> None:
        """Written by the next ``flush``."""
        with self._lock:
            self._put(_TAGS, image, (digest, changed), later=True)

    def forget_tag(self, image: str) -> None:
        """Fleet mode: a tag no host has any more."""
        with self._lock:
            self._drop(_TAGS, [image])

    def tag_list(self, repository: str) -> tuple[float, str] | None:
        """(when read, tags as JSON)."""
        with self._lock:
            return self.tag_lists.get(repository)

    def put_tag_list(self, repository: str, read: float, tags: str) -> None:
        with self._lock:
            self._put(_TAG_LISTS, repository, (read, tags))

    def keep_tag_lists(self, repositories: set[str]) -> None:
        """Forget the tag lists of repositories no local tag comes from any more."""
        with self._lock:
            self._drop(_TAG_LISTS, set(self.tag_lists) - repositories)

    def candidate(self, tag: str) -> tuple[str, bool, float | None, float] | None:
        """A candidate tag ("registry/name:tag"): (platform, has an image for it, when that
        was built, when looked at)."""
        with self._lock:
            return self.candidates.get(tag)

    def put_candidate(self, tag: str, platform: str, has_platform: bool,
                      created: float | None, checked: float) -> None:
        with self._lock:
            self._put(_CANDIDATES, tag, (platform, has_platform, created, checked))

    def forget_candidates(self, older_than: float) -> None:
        with self._lock:
            self._drop(_CANDIDATES, [t for t, v in self.candidates.items() if v[3] < older_than])

    def snapshot(self, name: str) -> tuple[float, str] | None:
        """The last snapshot a source saved under ``name``: (when taken, JSON), so ``report``
        can say what the running exporter last knew, and how old that is. Read from the file
        when it is open (another process may have written it), else from memory."""
        with self._lock:
            if self._db is not None:
                try:
                    row = self._db.execute("SELECT taken, body FROM snapshots WHERE name = ?",
                                           (name,)).fetchone()
                    return (float(row[0]), str(row[1])) if row else None
                except sqlite3.Error:
                    pass
            return self.snapshots.get(name)

    def put_snapshot(self, name: str, taken: float, body: str) -> None:
        with self._lock:
            self._put(_SNAPSHOTS, name, (taken, body))

    def pulled_repositories(self) -> frozenset[str]:
        """Repositories this host was seen pulling (by the event stream), across restarts:
        the containerd image store's only proof, before API 1.53, that an image came from
        Docker Hub (decisions/provenance.py)."""
        with self._lock:
            return frozenset(self.pulled)

    def seen_pulling(self, repository: str, when: float) -> None:
        with self._lock:
            if repository not in self.pulled:
                self._put(_PULLED, repository, when)

    def verdict(self, image: str) -> Verdict | None:
        with self._lock:
            return self.verdicts.get(image)

    def put_verdict(self, image: str, verdict: Verdict) -> None:
        """Written, by the next ``flush``, when the verdict changes, or its check time by an
        hour: a check of every tag each cycle need not cost a write each."""
        with self._lock:
            kept = self.verdicts.get(image)
            if kept is None or kept._replace(checked=verdict.checked) != verdict or \
                    verdict.checked - kept.checked >= 3600:
                self._put(_VERDICTS, image, verdict, later=True)

    def forget_upstream(self, image: str) -> None:
        """A tag that is no longer local: its drift-since and verdict go."""
        self.clear_drift(image)
        with self._lock:
            if image in self.verdicts or self._db is None:
                self._drop(_VERDICTS, [image])

    def tags_seen(self) -> dict[str, TagSeen]:
        """Per local tag, the image ID it names and when this exporter first saw it name it,
        across restarts (decisions/tagged.py)."""
        with self._lock:
            return dict(self.tag_seen)

    def keep_tags_seen(self, records: dict[str, TagSeen]) -> None:
        """Make the tags seen exactly ``records``: what changed is written in one commit,
        tags not in it are forgotten."""
        with self._lock:
            changed = {k: v for k, v in records.items() if self.tag_seen.get(k) != v}
            self._drop(_TAG_SEEN, set(self.tag_seen) - set(records))
            if changed:
                self.tag_seen.update(changed)
                self._deleted[_TAG_SEEN.name].difference_update(changed)
                self._execute(_TAG_SEEN.upsert, [_row(k, v) for k, v in changed.items()])

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._closed = True
            self._stop.set()
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None


_DRIFT, _TAGS, _TAG_LISTS, _CANDIDATES, _SNAPSHOTS, _DOCUMENTS, _PULLED, _VERDICTS, \
    _TAG_SEEN = _TABLES


def read_snapshot(path: str, name: str) -> tuple[float, str] | None:
    """A snapshot saved under ``name`` in the state file at ``path``, read without creating
    or changing anything (``report`` runs beside the exporter that owns the file); None when
    there is no file, no such snapshot, or the file cannot be read."""
    if not os.path.isfile(path):
        return None
    try:
        db = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute("SELECT taken, body FROM snapshots WHERE name = ?",
                             (name,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        log.warning("cannot read the state store %s: %s", path, exc)
        return None
    return (float(row[0]), str(row[1])) if row else None
