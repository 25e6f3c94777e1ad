"""The log in PostgreSQL (psycopg 3), for nodes at scale. One log per database.

Same tables and semantics as the SQLite store. A transaction-scoped advisory lock serializes
writers; entries are loaded with binary ``COPY``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from verinfer.errors import ConflictError, StorageError
from verinfer.log.store import SQLStore

__all__ = ["PostgresStore"]

_WRITER_LOCK = 0x76657269  # "veri": the advisory lock key held by the log's writer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (idx BIGINT PRIMARY KEY, data BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS tiles (
    level INTEGER NOT NULL, idx BIGINT NOT NULL, width INTEGER NOT NULL, hashes BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TABLE IF NOT EXISTS checkpoints (size BIGINT PRIMARY KEY, note TEXT NOT NULL);
CREATE OR REPLACE FUNCTION verinfer_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'tiles' AND TG_OP = 'UPDATE' THEN  -- PL/pgSQL does not short-circuit
        IF NEW.width > OLD.width THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
CREATE OR REPLACE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION verinfer_append_only();
CREATE OR REPLACE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION verinfer_append_only();
CREATE OR REPLACE TRIGGER tiles_only_widen BEFORE UPDATE OR DELETE ON tiles
    FOR EACH ROW EXECUTE FUNCTION verinfer_append_only();
"""


class PostgresStore(SQLStore):
    """A log in a PostgreSQL database named by a ``postgresql://`` URL."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url
        try:
            self._db = psycopg.connect(url, autocommit=True)
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITER_LOCK,))
                self._db.execute(_SCHEMA)
        except psycopg.Error as exc:
            raise StorageError(f"cannot open log database at {self._redacted()}: {exc}") from exc

    def _redacted(self) -> str:
        """The URL without its password, for messages."""
        info = psycopg.conninfo.conninfo_to_dict(self._url)
        info.pop("password", None)
        return repr(psycopg.conninfo.make_conninfo("", **info))

    def __repr__(self) -> str:
        return f"PostgresStore({self._redacted()})"

    _CONTAINS = "position(? in hashes) > 0"

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            cursor = self._db.execute(sql.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []
        except pg_errors.IntegrityError as exc:
            raise ConflictError(f"log database rejected a write: {exc}") from exc
        except psycopg.Error as exc:
            raise StorageError(f"log database error: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITER_LOCK,))
                yield
        except pg_errors.IntegrityError as exc:
            raise ConflictError(f"log database rejected a write: {exc}") from exc
        except psycopg.Error as exc:
            raise StorageError(f"log database error: {exc}") from exc

    def _insert_entries(self, start: int, entries: Sequence[bytes]) -> None:
        with (
            self._db.cursor() as cursor,
            cursor.copy("COPY entries (idx, data) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(["int8", "bytea"])
            for offset, data in enumerate(entries):
                copy.write_row((start + offset, data))

    def _many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        # errors are translated by _transaction, the only caller's context
        with self._db.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()
