"""``ultra-signals db``: the journal's schema revision by hand (upgrade, current, downgrade), and the state a restart
cannot lose (backup, restore, prune).

Any process that opens the journal upgrades it to the head already (see docs/journal.md); these commands are for
doing it ahead of a deployment, checking where a journal stands, and rolling back before installing an older
release.  Imports stay inside the commands, so ``ultra-signals --help`` does not load Alembic.

The journal also holds the caps' windows (allowed decisions), the trading state (HALTED survives a restart) and the
pause flag: losing it means a restart comes back ACTIVE with empty caps.  ``backup`` copies a SQLite journal while
runners write (SQLite's online backup API; ``pg_dump`` for PostgreSQL), ``restore`` puts a backup in place before a
start, ``prune`` keeps it from growing forever.  A canary/live start on a journal that had to be created starts
HALTED (bootstrap.halt_if_journal_lost).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ultra_signals.journal.writer import Journal

db_app = typer.Typer(
    no_args_is_help=True,
    help="The journal: schema upgrade/current/downgrade, backup, restore, retention (prune).",
)

ProfileOpt = Annotated[str | None, typer.Option("--profile", "-p", help="Settings profile (default: shadow).")]
SecretsOpt = Annotated[Path | None, typer.Option("--secrets-file", help="Secrets file (KEY=value lines).")]
JournalOpt = Annotated[
    str | None,
    typer.Option("--journal", "--journal-url", help="Journal DB URL (default: journal.url of the settings)."),
]


def _url(profile: str | None, secrets: Path | None, url: str | None) -> str:
    if url:
        return url
    from ultra_signals.core.config import ConfigError, load_settings

    try:
        return load_settings(profile, secrets_file=secrets).journal.url
    except ConfigError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None


def _missing_sqlite(url: str) -> Path | None:
    """The file of a SQLite URL that does not exist yet (reading it must not create it), else None."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        path = Path(u.database)
        return None if path.exists() else path
    return None


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


@db_app.command()
def upgrade(
    journal: JournalOpt = None,
    revision: Annotated[str, typer.Option(help="Target revision (default: the newest this code knows).")] = "head",
    profile: ProfileOpt = None,
    secrets_file: SecretsOpt = None,
) -> None:
    """Bring the journal's schema to the newest revision (creates a new journal; adopts a 0.1.0 one)."""
    from ultra_signals.journal import migrate
    from ultra_signals.journal.db import JournalError, make_engine, shown

    url = _url(profile, secrets_file, journal)
    try:
        engine = make_engine(url)
    except OSError as e:
        _fail(f"journal {shown(url)}: {e}")
        raise
    try:
        before, after = migrate.upgrade(engine, url, revision)
    except JournalError as e:
        _fail(str(e))
        raise
    finally:
        engine.dispose()
    if before == after:
        typer.echo(f"journal {shown(url)}: schema already at {after}")
    else:
        typer.echo(f"journal {shown(url)}: schema {before or '(none: new or 0.1.0 journal)'} → {after}")


@db_app.command()
def current(journal: JournalOpt = None, profile: ProfileOpt = None, secrets_file: SecretsOpt = None) -> None:
    """Show the journal's schema revision and the newest this code knows; changes nothing.

    Exit code 0 at the head, 1 when an upgrade is due (or no journal exists yet), 2 when the journal is newer than
    this code or cannot be read.
    """
    from ultra_signals.journal import migrate
    from ultra_signals.journal.db import make_engine, shown

    url = _url(profile, secrets_file, journal)
    missing = _missing_sqlite(url)
    if missing is not None:
        typer.echo(f"journal {shown(url)}: no journal yet ({missing} does not exist); head is {migrate.head()}")
        raise typer.Exit(1)
    engine = make_engine(url)
    try:
        rev = migrate.current(engine)
    except Exception as e:
        _fail(f"journal {shown(url)}: cannot read its schema revision: {e}")
        raise
    finally:
        engine.dispose()
    name = shown(url)
    if not rev.known:
        _fail(f"journal {name}: revision {rev.current} is newer than this code (its head is {rev.head})")
    if rev.at_head:
        typer.echo(f"journal {name}: revision {rev.current} (head)")
        return
    if rev.unversioned:
        typer.echo(f"journal {name}: unversioned 0.1.0 journal; `ultra-signals db upgrade` adopts it → {rev.head}")
    elif rev.current is None:
        typer.echo(f"journal {name}: no journal tables yet; head is {rev.head}")
    else:
        typer.echo(f"journal {name}: revision {rev.current}; head is {rev.head}: run `ultra-signals db upgrade`")
    raise typer.Exit(1)


@db_app.command()
def downgrade(
    revision: Annotated[str, typer.Argument(help="Revision to go back to (e.g. 0001), or 'base' (drops every table).")],
    journal: JournalOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="Needed for 'base': it deletes the whole journal.")] = False,
    profile: ProfileOpt = None,
    secrets_file: SecretsOpt = None,
) -> None:
    """Take the journal's schema back to an older revision, before running an older release on it."""
    from ultra_signals.journal import migrate
    from ultra_signals.journal.db import JournalError, make_engine, shown

    if revision == "base" and not yes:
        _fail("downgrading to 'base' drops every journal table and its rows; add --yes if that is what you want")
    url = _url(profile, secrets_file, journal)
    missing = _missing_sqlite(url)
    if missing is not None:
        _fail(f"journal {shown(url)}: {missing} does not exist")
    engine = make_engine(url)
    try:
        before, after = migrate.downgrade(engine, url, revision)
    except JournalError as e:
        _fail(str(e))
        raise
    finally:
        engine.dispose()
    typer.echo(f"journal {shown(url)}: schema {before} → {after}")


def _open(url: str) -> Journal:
    from ultra_signals.journal.writer import Journal, JournalError

    try:
        return Journal(url)
    except JournalError as e:
        typer.echo(str(e).splitlines()[0], err=True)  # the URL in it is shown with its password hidden
        raise typer.Exit(2) from None


@db_app.command("backup")
def backup(
    to: Annotated[Path | None, typer.Option("--to", help="Backup file (default var/backups/journal-<UTC>.db).")] = None,
    profile: ProfileOpt = None,
    secrets_file: SecretsOpt = None,
    journal_url: JournalOpt = None,
) -> None:
    """A consistent copy of the SQLite journal, safe while runners write (PostgreSQL: use pg_dump)."""
    from ultra_signals.journal.db import JournalError, shown
    from ultra_signals.journal.writer import sqlite_path

    url = _url(profile, secrets_file, journal_url)
    dest = to or Path("var/backups") / f"journal-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.db"
    if dest.exists():
        typer.echo(f"db backup: {dest} already exists; choose another --to", err=True)
        raise typer.Exit(2)
    if sqlite_path(url) is None:
        typer.echo(
            f"db backup: {shown(url)} is not a SQLite file journal; back PostgreSQL up with pg_dump "
            "(docs/operations.md, 'Journal backups')",
            err=True,
        )
        raise typer.Exit(2)
    j = _open(url)
    try:
        size = j.backup(dest)
    except (JournalError, sqlite3.Error, OSError) as e:
        typer.echo(f"db backup: {e}", err=True)
        raise typer.Exit(2) from None
    finally:
        j.close()
    typer.echo(f"backed up {shown(url)} to {dest} ({size:,} bytes)")


@db_app.command("restore")
def restore(
    from_: Annotated[Path, typer.Option("--from", help="A file written by `db backup`.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing journal file.")] = False,
    profile: ProfileOpt = None,
    secrets_file: SecretsOpt = None,
    journal_url: JournalOpt = None,
) -> None:
    """Put a backup in place of the SQLite journal (stop the runners first)."""
    from ultra_signals.journal.writer import sqlite_path

    url = _url(profile, secrets_file, journal_url)
    if not from_.is_file():
        typer.echo(f"db restore: {from_} is not a file", err=True)
        raise typer.Exit(2)
    try:
        src = sqlite3.connect(f"file:{from_}?mode=ro", uri=True)
        src.execute("select count(*) from runs").fetchone()
    except sqlite3.Error as e:
        typer.echo(f"db restore: {from_} is not a journal backup ({e})", err=True)
        raise typer.Exit(2) from None
    path = sqlite_path(url)
    if path is None:
        src.close()
        typer.echo("db restore: the journal is not a SQLite file; restore PostgreSQL with pg_restore/psql", err=True)
        raise typer.Exit(2)
    if path.exists() and not force:
        src.close()
        typer.echo(f"db restore: {path} exists; stop the runners and pass --force to replace it", err=True)
        raise typer.Exit(2)
    path.parent.mkdir(parents=True, exist_ok=True)
    for extra in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        extra.unlink(missing_ok=True)
    dst = sqlite3.connect(path)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    typer.echo(f"restored {from_} to {path}")


@db_app.command("prune")
def prune(
    keep_days: Annotated[float, typer.Option("--keep-days", help="Keep this many days of decisions (≥ 2).")] = 90.0,
    profile: ProfileOpt = None,
    secrets_file: SecretsOpt = None,
    journal_url: JournalOpt = None,
) -> None:
    """Retention: delete decisions older than --keep-days (event time) and the runs that ended before then."""
    from ultra_signals.journal.db import JournalError

    j = _open(_url(profile, secrets_file, journal_url))
    try:
        n = j.prune(keep_days)
    except JournalError as e:
        typer.echo(f"db prune: {e}", err=True)
        raise typer.Exit(2) from None
    finally:
        j.close()
    typer.echo(f"pruned {n['decisions']} decision(s) and {n['runs']} run(s) older than {keep_days:g} days")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
