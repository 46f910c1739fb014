"""The state store: what must survive a restart, in SQLite from the standard library.

Drift-since timestamps (so an alert's clock does not restart with the exporter),
content-addressed registry documents (so a changed digest costs one GET, once) and tag
lists and what their candidate tags hold (read once per versions.interval, restarts
included). The
in-memory dictionaries are the truth; SQLite is written through. When the file is missing
its directory, corrupt or read-only, the store logs once and keeps working in memory, and
``persistent`` says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from pathlib import Path

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
"""
MAX_DOCUMENT = 4 * 1024 * 1024
# Documents are kept up to this many bytes in all, the oldest dropped first: content-addressed,
# a dropped one costs one GET if it is ever wanted again.
MAX_DOCUMENTS_BYTES = 32 * 1024 * 1024


def default_path() -> str:
    """$STATE_DIRECTORY (systemd), else $XDG_STATE_HOME, else ~/.local/state."""
    base = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if not base:
        base = os.path.join(os.environ.get("XDG_STATE_HOME")
                            or os.path.expanduser("~/.local/state"), "docker-hygiene-exporter")
    return os.path.join(base, "state.db")


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
        if path:
            self._open(path)

    @property
    def persistent(self) -> bool:
        return self._db is not None

    def _open(self, path: str) -> None:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, check_same_thread=False, timeout=5)
            db.executescript(_SCHEMA)
            self.drift = dict(db.execute("SELECT image, since FROM drift").fetchall())
            self.documents = {d: (m, bytes(b)) for d, m, b in db.execute(
                "SELECT digest, media_type, body FROM documents ORDER BY rowid")}
            self.tags = {i: (d, c) for i, d, c in
                         db.execute("SELECT image, digest, changed FROM tags")}
            self.tag_lists = {r: (t, b) for r, t, b in db.execute(
                "SELECT repository, read, tags FROM tag_lists")}
            self.candidates = {t: (p, bool(h), c, k) for t, p, h, c, k in db.execute(
                "SELECT tag, platform, has_platform, created, checked FROM candidates")}
            self._document_bytes = sum(len(b) for _, b in self.documents.values())
            db.commit()
            self._db = db
        except (sqlite3.Error, OSError) as exc:
            log.error("state store %s unusable, keeping state in memory only: %s", path, exc)
            self.drift, self.documents, self.tags = {}, {}, {}
            self.tag_lists, self.candidates = {}, {}

    def _write(self, sql: str, *args: object) -> None:
        if self._db is None:
            return
        try:
            self._db.execute(sql, args)
            self._db.commit()
        except sqlite3.Error as exc:
            log.error("state store %s failed, keeping state in memory only: %s", self.path, exc)
            self._close_db()

    def _close_db(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def drift_since(self, image: str) -> float | None:
        with self._lock:
            return self.drift.get(image)

    def set_drift_since(self, image: str, since: float) -> None:
        with self._lock:
            if image not in self.drift:
                self.drift[image] = since
                self._write("INSERT OR REPLACE INTO drift VALUES (?, ?)", image, since)

    def clear_drift(self, image: str) -> None:
        with self._lock:
            if self.drift.pop(image, None) is not None:
                self._write("DELETE FROM drift WHERE image = ?", image)

    def document(self, digest: str) -> tuple[str, bytes] | None:
        with self._lock:
            return self.documents.get(digest)

    def put_document(self, digest: str, media_type: str, body: bytes) -> None:
        if len(body) > MAX_DOCUMENT:
            return
        with self._lock:
            if digest not in self.documents:
                self.documents[digest] = (media_type, body)
                self._document_bytes += len(body)
                self._write("INSERT OR REPLACE INTO documents VALUES (?, ?, ?)",
                            digest, media_type, body)
                while self._document_bytes > MAX_DOCUMENTS_BYTES:
                    oldest = next(iter(self.documents))
                    self._document_bytes -= len(self.documents.pop(oldest)[1])
                    self._write("DELETE FROM documents WHERE digest = ?", oldest)

    def tag_digest(self, image: str) -> tuple[str, float] | None:
        """Fleet mode: the digest a tag named upstream and since when."""
        with self._lock:
            return self.tags.get(image)

    def set_tag_digest(self, image: str, digest: str, changed: float) -> None:
        with self._lock:
            self.tags[image] = (digest, changed)
            self._write("INSERT OR REPLACE INTO tags VALUES (?, ?, ?)", image, digest, changed)

    def tag_list(self, repository: str) -> tuple[float, str] | None:
        """(when read, tags as JSON)."""
        with self._lock:
            return self.tag_lists.get(repository)

    def put_tag_list(self, repository: str, read: float, tags: str) -> None:
        with self._lock:
            self.tag_lists[repository] = (read, tags)
            self._write("INSERT OR REPLACE INTO tag_lists VALUES (?, ?, ?)",
                        repository, read, tags)

    def keep_tag_lists(self, repositories: set[str]) -> None:
        """Forget the tag lists of repositories no local tag comes from any more."""
        with self._lock:
            for repository in set(self.tag_lists) - repositories:
                del self.tag_lists[repository]
                self._write("DELETE FROM tag_lists WHERE repository = ?", repository)

    def candidate(self, tag: str) -> tuple[str, bool, float | None, float] | None:
        """A candidate tag ("registry/name:tag"): (platform, has an image for it, when that
        was built, when looked at)."""
        with self._lock:
            return self.candidates.get(tag)

    def put_candidate(self, tag: str, platform: str, has_platform: bool,
                      created: float | None, checked: float) -> None:
        with self._lock:
            self.candidates[tag] = (platform, has_platform, created, checked)
            self._write("INSERT OR REPLACE INTO candidates VALUES (?, ?, ?, ?, ?)",
                        tag, platform, int(has_platform), created, checked)

    def forget_candidates(self, older_than: float) -> None:
        with self._lock:
            for tag in [t for t, v in self.candidates.items() if v[3] < older_than]:
                del self.candidates[tag]
            self._write("DELETE FROM candidates WHERE checked < ?", older_than)

    def snapshot(self, name: str) -> tuple[float, str] | None:
        """The last snapshot a source saved under ``name``: (when taken, JSON), so ``report``
        can say what the running exporter last knew, and how old that is."""
        with self._lock:
            if self._db is None:
                return None
            try:
                row = self._db.execute("SELECT taken, body FROM snapshots WHERE name = ?",
                                       (name,)).fetchone()
            except sqlite3.Error:
                return None
            return (float(row[0]), str(row[1])) if row else None

    def put_snapshot(self, name: str, taken: float, body: str) -> None:
        with self._lock:
            self._write("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?)", name, taken, body)

    def close(self) -> None:
        with self._lock:
            self._close_db()


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
