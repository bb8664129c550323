"""The sweep database: open an Optuna storage from a URL, and a lock for claiming training slots.

URLs: any SQLAlchemy URL Optuna's RDBStorage takes (``sqlite:///path.db``, ``postgresql://...``,
``mysql+pymysql://...``), ``journal:///path/to/file.log`` for Optuna's journal file (many local
writers without SQLite's locking), or null for an in-memory study (one process only).
"""

import contextlib
import fcntl
import hashlib
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

import optuna
from optuna.storages import BaseStorage, InMemoryStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.exceptions import StorageInternalError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, NoSuchModuleError

from .errors import squashed
from .interrupts import check_interrupt

log = logging.getLogger(__name__)
T = TypeVar("T")

JOURNAL_PREFIX = "journal://"
SQLITE_TIMEOUT_S = 60  # several local processes share one SQLite file: wait for its lock, don't fail


class StorageError(ValueError):
    """A storage URL that cannot be opened, or a database lost for longer than we wait."""


def _short(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__ or exc
    text = squashed(cause) or type(cause).__name__
    return text.split(" (Background on this error")[0].split("[SQL:")[0].strip()[:200]


def is_disk_full(exc: BaseException) -> bool:
    text = f"{exc} {exc.__cause__ or ''} {exc.__context__ or ''}".lower()
    return "disk is full" in text or "no space left" in text or "disk full" in text


def retry_transient(fn: Callable[[], T], what: str, patience_s: float) -> T:
    """``fn()``, retried with backoff while the database is unreachable, for up to ``patience_s``.

    A full disk is not transient: it fails at once. Past the patience: StorageError, one line.
    """
    started, delay = time.monotonic(), 0.5
    while True:
        try:
            return fn()
        except (StorageInternalError, DBAPIError) as exc:
            if is_disk_full(exc):
                raise StorageError(f"{what}: the database's disk is full ({_short(exc)}); free space and re-run "
                                   "the same command: finished trials are kept") from None
            waited = time.monotonic() - started
            if waited > patience_s:
                raise StorageError(
                    f"{what}: the database has been unreachable for {waited:.0f}s ({_short(exc)}); finished trials "
                    "are kept in it: re-run the same command when it is back"
                ) from None
            log.warning("%s: database unreachable (%s); retrying in %.1fs", what, _short(exc), delay)
            check_interrupt()  # Ctrl-C during an outage acts now, not when the database is back
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def masked(url: Optional[str]) -> str:
    """The URL with any password replaced by ***, safe for logs and tables."""
    if url is None:
        return "in-memory"
    if url.startswith(JOURNAL_PREFIX):
        return url
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except Exception:
        shown = re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)  # not a URL, but may still hold a password
    return PASSWORD_QUERY.sub(r"\1***", shown)


STORAGE_URLS = ("use sqlite:///file.db, postgresql://user@host/db, mysql+pymysql://user@host/db, "
                "journal:///path/file.log, or null")


def not_a_url(url: str) -> str:
    return f"storage={masked(url)!r} is not a storage URL; {STORAGE_URLS}"


def unknown_scheme(url: str) -> str:
    return f"storage={masked(url)!r} has an unknown scheme; {STORAGE_URLS}"


def is_damaged_sqlite(text: str) -> bool:
    """SQLite's words for a file that is no database (its header over no database) or a damaged one."""
    return "file is not a database" in text or "malformed" in text


def unreadable_sqlite(path: Any, cause: str = "") -> StorageError:
    """A local file no SQLite can read as a database: no SQLite header, or pages damaged (``cause``: SQLite's words)."""
    return StorageError(f"{path} is not a readable SQLite database (corrupted, or not a sweep database)"
                        + (f": {cause}" if cause else ""))


# what to install for a URL's scheme (SQLAlchemy's dialect+driver; a bare dialect means its default driver)
DRIVERS = {
    "postgresql": "pip install 'psycopg[binary]' (in this repo: pip install -e '.[postgres]')",
    "postgresql+psycopg": "pip install 'psycopg[binary]' (in this repo: pip install -e '.[postgres]')",
    "postgresql+psycopg2": "pip install psycopg2-binary",
    "postgresql+asyncpg": "pip install asyncpg",
    "postgresql+pg8000": "pip install pg8000",
    "mysql": "pip install mysqlclient (or use mysql+pymysql://... with pip install pymysql)",
    "mysql+mysqldb": "pip install mysqlclient",
    "mysql+pymysql": "pip install pymysql",
    "mysql+mysqlconnector": "pip install mysql-connector-python",
    "mariadb": "pip install mysqlclient (or use mariadb+pymysql://... with pip install pymysql)",
    "mariadb+pymysql": "pip install pymysql",
    "oracle": "pip install oracledb",
    "mssql": "pip install pyodbc",
}


def schema_mismatch(text: str, url: str) -> Optional[StorageError]:
    """Optuna's refusal of a database whose schema another Optuna version wrote, said with what to do; else None."""
    if "optuna storage upgrade" in text:  # an older schema, one this Optuna can upgrade
        return StorageError(
            f"{masked(url)} was written by an Optuna version this one cannot read ({optuna.__version__}): "
            f"upgrade it with `optuna storage upgrade --storage URL` (back it up first), or install the Optuna "
            "version that wrote it"
        )
    if "no longer compatible" in text:  # a newer one
        return StorageError(f"{masked(url)} was written by a newer Optuna than this one ({optuna.__version__}): "
                            "pip install -U optuna")
    return None


def driver_missing(url: str, exc: BaseException) -> str:
    """One line for a URL whose database driver is not installed: what to install, for that scheme."""
    scheme = url.split("://", 1)[0].lower()
    while not isinstance(exc, ModuleNotFoundError) and (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__  # Optuna wraps the import error in one of its own words
    hint = DRIVERS.get(scheme) or f"install the Python driver SQLAlchemy uses for {scheme}://"
    return f"storage={masked(url)!r} needs a database driver ({exc}): {hint}"


def check_url(url: Optional[str]) -> None:
    """Refuse, before any work, a storage URL that is not one or whose scheme no driver knows."""
    if url is None or url.startswith(JOURNAL_PREFIX):
        return
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except NoSuchModuleError:
        raise StorageError(unknown_scheme(url)) from None
    except Exception:
        raise StorageError(not_a_url(url)) from None
    if parsed.get_backend_name() == "sqlite" and parsed.host:
        raise StorageError(f"storage={masked(url)!r} names a host; a SQLite file takes three slashes: "
                           f"sqlite:///{parsed.host}{'/' + parsed.database if parsed.database else ''} (relative) "
                           "or sqlite:////absolute/path.db")


PASSWORD_QUERY = re.compile(r"([?&](?:password|passwd|pwd)=)[^&#]*", re.IGNORECASE)


def has_password(url: str) -> bool:
    """A password in the user part (user:pw@host) or in the query (?password=...)."""
    if url.startswith(JOURNAL_PREFIX):
        return False
    if PASSWORD_QUERY.search(url):
        return True
    try:
        return bool(make_url(url).password)
    except Exception:
        return bool(re.search(r"//[^/@]*:[^/@]*@", url))


def scrubbed(text: str, url: Optional[str]) -> str:
    """``text`` (say a driver's error message) with the password of ``url`` replaced by ***."""
    secrets = [m.group(0).split("=", 1)[1] for m in PASSWORD_QUERY.finditer(url or "")]
    try:
        secrets.append(make_url(url).password or "")
    except Exception:
        pass
    for secret in filter(None, secrets):
        text = text.replace(secret, "***")
    return text


def refuse_written_password(raw: object) -> None:
    """A storage URL as written in a config or command line (Hydra saves both to disk) must hold no password."""
    if isinstance(raw, str) and "${" not in raw and has_password(raw):
        from .config import STORAGE_ENV

        raise StorageError(
            f"hydra.sweeper.storage={masked(raw)!r} holds a password, and Hydra writes the command line and "
            f"config to disk: put the URL in ${STORAGE_ENV} (or the password in PGPASSWORD / ~/.pgpass) instead"
        )


def local_file(url: Optional[str]) -> Optional[Path]:
    """The file behind a SQLite or journal URL (absolute), else None."""
    if url is None:
        return None
    if url.startswith(JOURNAL_PREFIX):  # as sqlite:///: journal:///rel.log is relative, journal:////abs.log absolute
        rest = url[len(JOURNAL_PREFIX):]
        return Path(rest[1:] if rest.startswith("/") else rest).expanduser().resolve()
    try:
        parsed = make_url(url)
    except Exception:
        return None  # not a URL: open_storage says so
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database).expanduser().resolve()
    return None


def _journal(path: Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(path)))


def _rdb(url: str, shown: str, **kwargs) -> RDBStorage:
    """RDBStorage with the driver errors said in one line (what a missing driver needs installed)."""
    try:
        return RDBStorage(url, **kwargs)
    except NoSuchModuleError:
        raise StorageError(unknown_scheme(shown)) from None
    except ImportError as exc:
        raise StorageError(driver_missing(shown, exc)) from None


def make_folder(folder: Path, url: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"storage={masked(url)!r}: its folder {folder} cannot be created ({exc.strerror or exc})") from None


def open_storage(url: Optional[str]) -> BaseStorage:
    """An Optuna storage for ``url``; the folder of a SQLite or journal file is created."""
    if url is None:
        return InMemoryStorage()
    path = local_file(url)
    if path is not None:
        make_folder(path.parent, url)
    if url.startswith(JOURNAL_PREFIX):
        return _journal(path)
    try:
        parsed = make_url(url)
    except Exception:
        raise StorageError(not_a_url(url)) from None
    engine_kwargs = {}
    shown = url
    if parsed.get_backend_name() == "sqlite":
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
        url = f"sqlite:///{path}"
    elif parsed.get_backend_name() == "postgresql":
        engine_kwargs["connect_args"] = {"connect_timeout": 10}  # fail in seconds when unreachable
        engine_kwargs["pool_pre_ping"] = True
    try:
        return _rdb(url, shown, engine_kwargs=engine_kwargs)
    except StorageError:
        raise
    except Exception as exc:
        message = squashed(exc.orig if isinstance(exc, DBAPIError) else exc, 300)  # SQLAlchemy's trailers left out
        if path is not None and is_damaged_sqlite(message):
            raise unreadable_sqlite(path, message) from None  # as the results tool says it
        mismatch = schema_mismatch(message, shown)
        if mismatch is not None:
            raise mismatch from None
        raise StorageError(f"storage={masked(shown)!r} cannot be opened: {scrubbed(message, shown)}") from None


def _looks_like_journal(path: Path) -> bool:
    """An empty file, or one whose first line is a JSON record with an op_code (Optuna's journal format)."""
    import json

    with open(path, "rb") as f:
        first = f.readline().strip()
    if not first:
        return True
    try:
        return "op_code" in json.loads(first)
    except (ValueError, TypeError):
        return False


OPTUNA_TABLES = {"studies", "trials", "version_info", "alembic_version"}  # in every Optuna RDB storage since 1.x


def _require_optuna_tables(url: str, shown: str) -> None:
    """A database that holds no Optuna tables is no sweep database: say so, rather than Optuna's commit error."""
    import sqlalchemy

    connect_args = {"connect_timeout": 10} if make_url(url).get_backend_name() == "postgresql" else {}
    try:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args=connect_args)
        with engine.connect() as conn:
            tables = set(sqlalchemy.inspect(conn).get_table_names())
        engine.dispose()
    except ImportError as exc:
        raise StorageError(driver_missing(shown, exc)) from None
    except DBAPIError as exc:
        text = squashed(exc.orig, 200)
        if is_damaged_sqlite(text):
            raise unreadable_sqlite(local_file(shown), text) from None
        raise StorageError(f"{masked(shown)} cannot be reached: {scrubbed(text, shown)}") from None
    if not OPTUNA_TABLES <= tables:
        raise StorageError(f"{masked(shown)} holds no sweep: it has no Optuna tables (an empty database, or "
                           "another program's)")


def open_storage_readonly(url: str) -> BaseStorage:
    """The storage behind ``url``, opened without creating, upgrading or writing anything."""
    path = local_file(url)
    if path is not None and not path.is_file():
        raise StorageError(f"no sweep database at {path} ({masked(url)}); run a sweep first or pass --storage")
    if url.startswith(JOURNAL_PREFIX):
        if not _looks_like_journal(path):
            raise StorageError(f"{path} is not an Optuna journal: its first line is not a journal record")
        try:
            return _journal(path)
        except Exception as exc:
            raise StorageError(f"{path} is not a readable Optuna journal: {squashed(exc, 200)}") from None
    check_url(url)
    shown = url
    if path is not None:  # read-only: this command never writes to the database
        with open(path, "rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                raise unreadable_sqlite(path)
        url = f"sqlite:///file:{path}?mode=ro&uri=true"
    _require_optuna_tables(url, shown)
    try:
        return _rdb(url, shown, skip_table_creation=True)
    except StorageError:
        raise
    except Exception as exc:
        text = squashed(exc)
        mismatch = schema_mismatch(text, shown)
        if mismatch is not None:
            raise mismatch from None
        if "malformed" in text:  # damage met past the tables' names
            raise unreadable_sqlite(path, text[:200]) from None
        raise StorageError(f"cannot open {masked(shown)}: {text[:300]}") from None


_thread_lock = threading.Lock()


@contextlib.contextmanager
def claim_lock(url: Optional[str]) -> Iterator[None]:
    """Held while a worker counts a study's trained trials and claims the next slot, and while a
    process opens the database (so concurrent first runs create its tables once). Claims take
    milliseconds to a second, so one lock per database is enough.

    File storages lock a file beside the database (processes on this machine); PostgreSQL and
    MySQL take a database-wide advisory lock (processes on any machine); in-memory, a thread lock.
    """
    if url is None:
        with _thread_lock:
            yield
        return
    path = local_file(url)
    if path is not None:
        # One per database (creating its tables is serialized too). Not "<file>.lock": Optuna's
        # journal backend creates and deletes that name as its own lock.
        lock_path = path.with_name(path.name + ".claim-lock")
        make_folder(path.parent, url)
        try:
            f = open(lock_path, "a")
        except OSError as exc:
            raise StorageError(f"storage={masked(url)!r}: cannot write {lock_path.name} beside the database "
                               f"({exc.strerror or exc}); the folder must be writable") from None
        with f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return
    import sqlalchemy

    key = int.from_bytes(hashlib.sha256(b"mnist-arch-sweep").digest()[:8], "big", signed=True)  # one per database
    backend = make_url(url).get_backend_name()
    connect_args = {"connect_timeout": 10} if backend == "postgresql" else {}
    try:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args=connect_args)
    except sqlalchemy.exc.NoSuchModuleError:
        raise StorageError(unknown_scheme(url)) from None
    except ImportError as exc:
        raise StorageError(driver_missing(url, exc)) from None
    with engine.connect() as conn:
        if backend == "postgresql":
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            release = sqlalchemy.text("SELECT pg_advisory_unlock(:k)")
        elif backend == "mysql":
            conn.execute(sqlalchemy.text("SELECT GET_LOCK(:k, 600)"), {"k": str(key)})
            release = sqlalchemy.text("SELECT RELEASE_LOCK(:k)")
        else:
            raise StorageError(f"storage={masked(url)!r}: no cross-process lock for the {backend} backend")
        try:
            yield
        finally:
            conn.execute(release, {"k": key if backend == "postgresql" else str(key)})
    engine.dispose()


def load_or_create_study(storage: BaseStorage, study_name: str, directions, sampler, pruner) -> optuna.Study:
    """The study of that name, created if absent; an existing study with other directions is refused."""
    try:
        existing = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        existing = None
    if existing is not None:
        have = [d.name.lower() for d in existing.directions]
        if have != list(directions):
            raise StorageError(
                f"study {study_name!r} exists with direction {have}, not {list(directions)}; "
                "use another hydra.sweeper.study_name or the same direction"
            )
        return existing
    return optuna.create_study(
        study_name=study_name, storage=storage, directions=list(directions), sampler=sampler, pruner=pruner,
        load_if_exists=True,
    )


SEARCH_SPACE_ATTR = "search_space"  # the study's declared search space, as Optuna's distribution JSON


def check_search_space(study: optuna.Study, distributions, allow_change: bool) -> None:
    """Refuse to go on with a study begun over another search space, unless ``allow_change``.

    The first sweep records its space on the study; studies from before that are compared with
    the distributions their trials used.
    """
    from optuna.distributions import distribution_to_json, json_to_distribution

    from .search_space import describe

    storage, study_id = study._storage, study._study_id
    stored = storage.get_study_system_attrs(study_id).get(SEARCH_SPACE_ATTR)
    if stored is not None:
        before = {k: json_to_distribution(v) for k, v in stored.items()}
    else:
        before = {}
        for trial in study.get_trials(deepcopy=False):  # pragma: no mutate (only read: a copy or not)
            before.update(trial.distributions)
        if before:  # a trial's own suggest_* params (custom_search_space) cannot be told apart: compare ours
            before = {k: v for k, v in before.items() if k in distributions} or {"(none of these)": None}
    if before and before != distributions and not allow_change:
        text = lambda space: "{" + ", ".join(f"{k}: {describe(d)}" if d else k for k, d in sorted(space.items())) + "}"
        raise StorageError(
            f"study {study.study_name!r} was begun over the search space {text(before)}, not {text(distributions)}: "
            "give a new hydra.sweeper.study_name, or set hydra.sweeper.allow_search_space_change=true to go on"
        )
    from optuna.distributions import CategoricalDistribution

    for key, old in before.items():  # Optuna keeps a categorical's choices for the life of a study
        new = distributions.get(key)
        if isinstance(old, CategoricalDistribution) and isinstance(new, CategoricalDistribution) and old != new:
            raise StorageError(
                f"study {study.study_name!r} chose {key} from {describe(old)}; Optuna cannot change a choice's options "
                f"within a study (here {describe(new)}): give a new hydra.sweeper.study_name"
            )
    if stored is None or before != distributions:
        storage.set_study_system_attr(study_id, SEARCH_SPACE_ATTR,
                                      {k: distribution_to_json(d) for k, d in distributions.items()})
