"""The state store against real SQLite files: one unreadable table costs that table only, a
corrupt file is moved aside, a locked or read-only file is tried again until it works, and
``persistent`` says which of these is true at each moment."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter import state
from exporter.state import StateStore
from tests.services import wait_for

DOC = "application/vnd.oci.image.manifest.v1+json"


def _filled(path: Path) -> None:
    """A store with drift-since times, fleet digests and enough documents to fill many pages."""
    store = StateStore(str(path))
    assert store.persistent
    store.set_drift_since("nginx:1.25", 1_700_000_000.0)
    store.set_drift_since("redis:7", 1_700_000_500.0)
    store.set_tag_digest("redis:7", "sha256:" + "a" * 64, 1_700_000_100.0)
    for i in range(40):
        store.put_document(f"sha256:{i:064x}", DOC, bytes([i]) * 3000)
    store.close()


def _corrupt_table(path: Path, table: str) -> int:
    """Overwrite the b-tree page headers of ``table`` (its pages found through dbstat), so
    reading it fails while every other table stays readable. Returns the pages hit."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        pages = [p for (p,) in db.execute("SELECT pageno FROM dbstat WHERE name = ?", (table,))]
        others = {p for (p,) in db.execute("SELECT pageno FROM dbstat WHERE name != ?",
                                           (table,))}
        size = db.execute("PRAGMA page_size").fetchone()[0]
    assert len(pages) > 10 and not others & set(pages)
    with open(path, "r+b") as fh:
        for page in pages:
            fh.seek((page - 1) * size)
            fh.write(b"\xee" * 12)
    with contextlib.closing(sqlite3.connect(path)) as db, pytest.raises(sqlite3.DatabaseError):
        db.execute(f"SELECT * FROM {table}").fetchall()
    return len(pages)


def _aside(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".corrupt-*"))


def _rows(path: Path, sql: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


def test_corrupt_documents_table_keeps_drift_since(tmp_path: Path, caplog) -> None:
    path = tmp_path / "state.db"
    _filled(path)
    _corrupt_table(path, "documents")
    caplog.set_level(logging.INFO, "exporter.state")
    store = StateStore(str(path))
    try:
        assert store.persistent
        assert store.drift_since("nginx:1.25") == 1_700_000_000.0
        assert store.drift_since("redis:7") == 1_700_000_500.0
        assert store.tag_digest("redis:7") == ("sha256:" + "a" * 64, 1_700_000_100.0)
        assert store.documents == {}
        aside = _aside(path)
        assert len(aside) == 1, aside
        corrupt = [r.getMessage() for r in caplog.records if "corrupt" in r.getMessage()]
        assert len(corrupt) == 1, caplog.text
        assert "table documents" in corrupt[0] and str(aside[0]) in corrupt[0]
        assert "drift (2 rows)" in corrupt[0]
        # The fresh file holds what could be read, and takes new writes.
        store.put_document("sha256:" + "f" * 64, DOC, b"{}")
        assert sorted(_rows(path, "SELECT image, since FROM drift")) == [
            ("nginx:1.25", 1_700_000_000.0), ("redis:7", 1_700_000_500.0)]
        assert _rows(path, "PRAGMA quick_check") == [("ok",)]
    finally:
        store.close()
    reopened = StateStore(str(path))
    try:
        assert reopened.persistent and len(_aside(path)) == 1  # nothing more moved aside
        assert reopened.drift_since("nginx:1.25") == 1_700_000_000.0
        assert list(reopened.documents) == ["sha256:" + "f" * 64]
    finally:
        reopened.close()


def test_table_of_the_wrong_shape_costs_that_table_only(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE drift (image TEXT PRIMARY KEY, since REAL NOT NULL)")
        db.execute("INSERT INTO drift VALUES ('app:1', 42.5)")
        db.execute("CREATE TABLE candidates (tag TEXT PRIMARY KEY, something_else TEXT)")
        db.execute("INSERT INTO candidates VALUES ('r/app:2', 'x')")
    store = StateStore(str(path))
    try:
        assert store.persistent
        assert store.drift == {"app:1": 42.5}
        assert store.candidates == {}
        assert len(_aside(path)) == 1
        store.put_candidate("r/app:2", "linux/amd64", True, None, 7.0)  # the schema is ours
        assert _rows(path, "SELECT tag, checked FROM candidates") == [("r/app:2", 7.0)]
    finally:
        store.close()


def test_a_file_that_is_no_database_is_moved_aside(tmp_path: Path, caplog) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a sqlite database" * 100)
    (tmp_path / "state.db-journal").write_bytes(b"a stale journal")
    store = StateStore(str(path))
    try:
        assert store.persistent
        aside = _aside(path)
        assert [p.name for p in aside] == [aside[0].name]
        assert aside[0].read_bytes() == b"this is not a sqlite database" * 100
        # No journal of the old file is left to be applied to the fresh one.
        assert not (tmp_path / "state.db-journal").exists()
        store.set_drift_since("app:1", 1.0)
        assert _rows(path, "SELECT image FROM drift") == [("app:1",)]
        assert caplog.text.count("is corrupt (the file: file is not a database)") == 1
    finally:
        store.close()


@pytest.fixture
def locker(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """A filled state file, and another connection to it holding an EXCLUSIVE lock."""
    path = tmp_path / "state.db"
    _filled(path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    yield path, other
    other.close()


def test_locked_at_start_is_retried_and_merged(locker, caplog) -> None:
    path, other = locker
    caplog.set_level(logging.INFO, "exporter.state")
    started = time.monotonic()
    store = StateStore(str(path))
    try:
        waited = time.monotonic() - started
        assert state.LOCK_WAIT - 0.2 <= waited < state.LOCK_WAIT + 2, waited  # bounded
        assert not store.persistent
        assert store.drift == {}  # nothing could be read yet
        # What happens meanwhile: a new drift, a cleared one, a document.
        store.set_drift_since("nginx:1.25", 1_800_000_000.0)  # the file's earlier one wins
        store.set_drift_since("busybox:1", 1_800_000_000.0)
        store.clear_drift("redis:7")
        store.put_document("sha256:" + "e" * 64, DOC, b"new")
        time.sleep(2)
        assert not store.persistent  # still locked: still saying so
        other.execute("ROLLBACK")
        wait_for(lambda: store.persistent, 30, "persistent once the lock is released")
        assert store.drift == {"nginx:1.25": 1_700_000_000.0, "busybox:1": 1_800_000_000.0}
        assert store.tag_digest("redis:7") is not None
        assert len(store.documents) == 41
        assert sorted(_rows(path, "SELECT image, since FROM drift")) == [
            ("busybox:1", 1_800_000_000.0), ("nginx:1.25", 1_700_000_000.0)]
        assert _rows(path, "SELECT count(*) FROM documents") == [(41,)]
        assert not _aside(path)  # a lock is no corruption
        assert caplog.text.count("keeping state in memory only") == 1, caplog.text
        assert caplog.text.count("written to disk again") == 1, caplog.text
    finally:
        store.close()


def test_lock_during_writes_is_retried(locker) -> None:
    path, other = locker
    other.execute("ROLLBACK")
    store = StateStore(str(path))
    try:
        assert store.persistent
        other.execute("BEGIN EXCLUSIVE")
        store.set_drift_since("late:1", 5.0)  # waits LOCK_WAIT, then keeps it in memory
        assert not store.persistent
        assert store.drift_since("late:1") == 5.0
        other.execute("ROLLBACK")
        wait_for(lambda: store.persistent, 30, "persistent again")
        assert ("late:1", 5.0) in _rows(path, "SELECT image, since FROM drift")
    finally:
        store.close()


def test_read_only_until_remounted_writable(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(ro), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        store = StateStore(str(ro / "state.db"))
        try:
            assert not store.persistent
            store.set_drift_since("app:1", 9.0)
            subprocess.run(["mount", "-o", "remount,rw,bind", str(ro)], check=True)
            wait_for(lambda: store.persistent, 30, "persistent once writable")
            assert _rows(ro / "state.db", "SELECT image, since FROM drift") == [("app:1", 9.0)]
        finally:
            store.close()
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_no_path_is_memory_only(tmp_path: Path) -> None:
    store = StateStore(None)
    store.set_drift_since("app:1", 1.0)
    assert store.drift_since("app:1") == 1.0 and not store.persistent
    store.close()


def test_a_cycles_verdicts_go_in_one_commit(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(str(path))
    commits: list[str] = []
    assert store._db is not None
    store._db.set_trace_callback(
        lambda sql: commits.append("commit") if sql.strip().upper() == "COMMIT" else None)
    try:
        for i in range(200):
            store.put_verdict(f"app:{i}", state.Verdict(f"sha256:{i:064x}", "current", 1.0,
                                                         "", "", ""))
        assert commits == [] and _rows(path, "SELECT count(*) FROM verdicts") == [(0,)]
        assert store.verdict("app:3") is not None  # memory has it at once
        store.forget_upstream("app:7")  # forgotten before it was written: never written
        commits.clear()
        store.flush()
        assert commits == ["commit"]
        assert _rows(path, "SELECT count(*) FROM verdicts") == [(199,)]
        store.flush()  # nothing new: no commit
        assert commits == ["commit"]
        store.put_verdict("app:500", state.Verdict("sha256:" + "f" * 64, "drifted", 2.0,
                                                   "", "", ""))
    finally:
        store.close()  # writes what was kept
    again = StateStore(str(path))
    try:
        assert len(again.verdicts) == 200 and "app:7" not in again.verdicts
        assert again.verdict("app:500") is not None
    finally:
        again.close()
