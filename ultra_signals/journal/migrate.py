"""Schema migrations of the journal (Alembic, configured in code: no ``alembic.ini``, no ``env.py`` at runtime).

The revisions ship inside the package (``journal/migrations/versions``).  What happens on open (``Journal(url)``
calls :func:`upgrade`):

- a journal at the head is left alone, decided with one query (Alembic is imported only when there is work);
- a new, empty journal gets ``schema.py``'s tables and is stamped at the head (Alembic's advice for a fresh
  database; a test proves it equals running every revision);
- an unversioned journal written by 0.1.0 (no ``alembic_version`` table, some or all of 0.1.0's tables) is checked
  table by table against the baseline's columns, then taken through the baseline (which only adds the tables that
  0.1.0 had not created yet) and the later revisions;
- a journal at an older revision is upgraded to the head;
- a journal at a revision this code does not know (written by a newer release) is refused with
  :class:`JournalError`: nothing is written to it.

Concurrency: the whole check-and-upgrade is one transaction under a lock, ``BEGIN IMMEDIATE`` on SQLite (the
database write lock; a second process waits up to the busy timeout, then finds the head) and
``pg_advisory_xact_lock`` on PostgreSQL (DDL there is transactional too), so two runners starting together on one
journal upgrade it once.  A failed revision rolls the whole step back on PostgreSQL; on SQLite, DDL inside the
transaction is rolled back as well.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Connection, Engine, MetaData, PrimaryKeyConstraint, String, Table, inspect, select, text

from ultra_signals.journal.db import JournalError, shown
from ultra_signals.journal.schema import SCHEMA_HEAD, metadata

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"
# Any constant: the advisory lock only has to be the same number for every ultra-signals process on one database.
PG_LOCK_KEY = 0x756C7472615F6A6C  # "ultra_jl"


@dataclass(frozen=True, slots=True)
class Revision:
    """Where a journal stands: its revision (None: no journal yet or unversioned 0.1.0) and what the code knows."""

    current: str | None
    head: str
    unversioned: bool  # 0.1.0 tables present, no alembic_version: the baseline will adopt it
    known: bool  # False: written by a newer release

    @property
    def at_head(self) -> bool:
        return self.current == self.head


# Alembic's own version table, as ``alembic`` creates it: a journal created from ``schema.py`` is stamped with it.
_version = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def _config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


@functools.cache
def script_directory() -> ScriptDirectory:
    """The shipped revisions (read once per process: they do not change under a running program)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def head() -> str:
    h = script_directory().get_current_head()
    assert h is not None, f"no revisions in {MIGRATIONS}"
    return h


def _known() -> set[str]:
    return {r.revision for r in script_directory().walk_revisions()}


def baseline_tables() -> MetaData:
    """The 0.1.0 tables as the baseline revision freezes them (what 0.1.0's ``create_all`` calls made)."""
    baseline = script_directory().get_revision(BASELINE)
    assert baseline is not None and baseline.module is not None
    md = baseline.module.tables()
    assert isinstance(md, MetaData)
    return md


def _our_tables(conn: Connection) -> set[str]:
    names = set(baseline_tables().tables) | set(metadata.tables)
    return names & set(inspect(conn).get_table_names())


def _stored(conn: Connection) -> list[str] | None:
    """The journal's revision rows, None without a version table (plain SQL: Alembic is not even imported)."""
    if not inspect(conn).has_table(_version.name):
        return None
    return [str(v) for v in conn.execute(select(_version.c.version_num)).scalars()]


def _revision(conn: Connection) -> Revision:
    stored = _stored(conn)
    if stored == [SCHEMA_HEAD]:  # the usual case, decided without loading the revisions
        return Revision(SCHEMA_HEAD, SCHEMA_HEAD, False, True)
    heads = tuple(stored or ())
    h, known = head(), _known()
    if len(heads) > 1:
        raise JournalError(f"journal has several revisions {sorted(heads)}: not a journal this code wrote")
    cur = heads[0] if heads else None
    unversioned = cur is None and bool(_our_tables(conn))
    return Revision(cur, h, unversioned, cur is None or cur in known)


def _check_unversioned(conn: Connection, name: str) -> None:
    """An unversioned journal must have 0.1.0's columns in every 0.1.0 table it holds, or we will not adopt it."""
    insp = inspect(conn)
    present = set(insp.get_table_names())
    for table in baseline_tables().sorted_tables:
        if table.name not in present:
            continue
        have = {c["name"] for c in insp.get_columns(table.name)}
        want = {c.name for c in table.columns}
        if have != want:
            missing, extra = sorted(want - have), sorted(have - want)
            raise JournalError(
                f"journal {name}: table {table.name!r} is not the 0.1.0 journal's"
                f" (missing columns {missing or 'none'}, unexpected {extra or 'none'}); it has no schema revision,"
                " so it cannot be upgraded safely — point --journal at a journal of ultra-signals, or a new file"
            )


def _newer(name: str, rev: Revision) -> JournalError:
    return JournalError(
        f"journal {name} is at schema revision {rev.current!r}, which this ultra-signals does not know (its newest is"
        f" {rev.head!r}): a newer release wrote it. Run that release (or newer) on it, or use another journal;"
        " nothing was written"
    )


@contextlib.contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """One connection in one transaction holding the journal's migration lock; committed if the body returns."""
    backend = engine.dialect.name
    with engine.connect() as conn:
        if backend == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif backend == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def _run(conn: Connection, target: str, down: bool) -> None:
    from alembic.runtime.environment import EnvironmentContext

    script = script_directory()
    cfg = _config()

    def steps(rev: Any, _context: Any) -> Any:
        return script._downgrade_revs(target, rev) if down else script._upgrade_revs(target, rev)

    with EnvironmentContext(cfg, script, fn=steps, destination_rev=target) as env:
        env.configure(connection=conn, target_metadata=metadata)
        env.run_migrations()


def _create_at_head(conn: Connection) -> None:
    """A new journal: ``schema.py``'s tables and the head's stamp, as Alembic recommends for a fresh database.

    Same result as running every revision (``tests/test_journal_migrate.py`` compares the two), but without
    importing Alembic, which costs a starting process about half a second on the 2-core test machine.
    """
    metadata.create_all(conn)
    _version.create(conn)
    conn.execute(_version.insert().values(version_num=SCHEMA_HEAD))


def current(engine: Engine) -> Revision:
    """The journal's revision, read only (no lock, no write)."""
    with engine.connect() as conn:
        return _revision(conn)


def upgrade(engine: Engine, url: str, target: str = "head") -> tuple[str | None, str]:
    """Bring the journal to ``target`` (default: the head); returns (revision before, revision after)."""
    name = shown(url)
    try:
        with _locked(engine) as conn:
            if target == "head":
                stored = _stored(conn)
                if stored == [SCHEMA_HEAD]:
                    return SCHEMA_HEAD, SCHEMA_HEAD
                if stored is None and not set(metadata.tables) & set(inspect(conn).get_table_names()):
                    _create_at_head(conn)
                    log.info("journal %s: new, schema %s", name, SCHEMA_HEAD)
                    return None, SCHEMA_HEAD
            rev = _revision(conn)
            if not rev.known:
                raise _newer(name, rev)
            if rev.current is None:
                _check_unversioned(conn, name)
            goal = rev.head if target == "head" else target
            if rev.current != goal:
                _run(conn, goal, down=False)
                log.info("journal %s: schema %s → %s", name, rev.current or "(none)", goal)
            return rev.current, goal
    except JournalError:
        raise
    except Exception as e:  # an unreachable database, a locked file, a failing revision: say which journal
        raise JournalError(f"journal {name}: cannot bring the schema to {target}: {e}") from e


def downgrade(engine: Engine, url: str, target: str) -> tuple[str | None, str]:
    """Take the journal back to ``target`` (a revision, or ``base``: no journal tables at all)."""
    name = shown(url)
    try:
        with _locked(engine) as conn:
            rev = _revision(conn)
            if not rev.known:
                raise _newer(name, rev)
            if rev.current is None:
                raise JournalError(f"journal {name} has no schema revision: nothing to downgrade")
            if target != "base" and target not in _known():
                raise JournalError(f"unknown revision {target!r}: known are {sorted(_known())}")
            _run(conn, target, down=True)
            log.info("journal %s: schema %s → %s", name, rev.current, target)
            return rev.current, target
    except JournalError:
        raise
    except Exception as e:
        raise JournalError(f"journal {name}: cannot take the schema back to {target}: {e}") from e
