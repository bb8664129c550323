"""Storage URLs checked before any work (sweeper.storage): the line for each kind of mistake, with any password
masked, from the check and from opening the storage."""

import re

import pytest

from sweeper.storage import StorageError, check_url, open_storage

USE = ("use sqlite:///file.db, postgresql://user@host/db, mysql+pymysql://user@host/db, journal:///path/file.log, "
       "or null")


@pytest.mark.parametrize("url", [None, "sqlite:///a.db", "sqlite:////abs/a.db", "journal:///x.log",
                                 "journal:////abs/x.log", "postgresql://u:secret@h:5432/db?x=1", "sqlite://"])
def test_storage_urls_that_name_a_storage_pass_the_check(url):
    check_url(url)


@pytest.mark.parametrize("url, said", [
    ("notaurl", f"storage='notaurl' is not a storage URL; {USE}"),
    ("http//x", f"storage='http//x' is not a storage URL; {USE}"),
    ("//u:pw@h/db", f"storage='//u:***@h/db' is not a storage URL; {USE}"),  # not a URL; its password masked
    ("foo://u:pw@h/db", f"storage='foo://u:***@h/db' has an unknown scheme; {USE}"),
    ("sqlite://host/x.db", "storage='sqlite://host/x.db' names a host; a SQLite file takes three slashes: "
                           "sqlite:///host/x.db (relative) or sqlite:////absolute/path.db"),
    ("sqlite://host", "storage='sqlite://host' names a host; a SQLite file takes three slashes: sqlite:///host "
                      "(relative) or sqlite:////absolute/path.db"),
])
def test_a_storage_url_that_is_not_one_is_refused_in_one_line(url, said):
    with pytest.raises(StorageError) as info:
        check_url(url)
    assert str(info.value) == said and (info.value.__context__ is None or info.value.__suppress_context__)


@pytest.mark.parametrize("url, said", [
    ("notaurl", f"storage='notaurl' is not a storage URL; {USE}"),
    ("foo://u:pw@h/db", f"storage='foo://u:***@h/db' has an unknown scheme; {USE}"),
])
def test_opening_a_storage_that_is_not_one_says_the_same(url, said, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StorageError) as info:
        open_storage(url)
    assert str(info.value) == said and info.value.__suppress_context__
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ a database that goes away


class Clock:
    """time.monotonic and time.sleep of sweeper.storage: sleeping moves the clock on, nothing waits."""

    def __init__(self):
        self.now, self.slept = 100.0, []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    import types

    from sweeper import storage

    made = Clock()
    monkeypatch.setattr(storage, "time", types.SimpleNamespace(monotonic=made.monotonic, sleep=made.sleep))
    return made


def outage(text="could not connect to server: Connection refused"):
    from sqlalchemy.exc import OperationalError

    return OperationalError("SELECT 1", {}, Exception(text))


def failing(times, exc):
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= times:
            raise exc
        return "stored"
    return fn, calls


def test_a_brief_outage_is_waited_out_with_backoff_and_a_line_per_retry(clock, caplog):
    import logging

    from sweeper.storage import retry_transient

    fn, calls = failing(7, outage())
    with caplog.at_level(logging.WARNING, logger="sweeper.storage"):
        assert retry_transient(fn, "trial 3", patience_s=120) == "stored"
    assert len(calls) == 8 and clock.slept == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]  # doubling, at most 10 s
    said = "trial 3: database unreachable ((builtins.Exception) could not connect to server: Connection refused)"
    assert [r.getMessage() for r in caplog.records][:2] == [f"{said}; retrying in 0.5s", f"{said}; retrying in 1.0s"]
    assert len(caplog.records) == 7 and {r.levelname for r in caplog.records} == {"WARNING"}


def test_an_outage_longer_than_the_patience_is_one_line_and_the_patience_itself_is_waited(clock):
    from optuna.exceptions import StorageInternalError

    from sweeper.storage import retry_transient

    fn, calls = failing(100, StorageInternalError("lost"))
    with pytest.raises(StorageError) as info:
        retry_transient(fn, "storing trial 3", patience_s=15)
    # 0.5 + 1 + 2 + 4 + 8 = 15.5 s waited when the sixth call fails: past 15 s, not at it
    assert clock.slept == [0.5, 1.0, 2.0, 4.0, 8.0] and len(calls) == 6
    assert str(info.value) == ("storing trial 3: the database has been unreachable for 16s (lost); finished trials are "
                               "kept in it: re-run the same command when it is back")
    assert info.value.__suppress_context__
    clock.slept.clear()
    fn, calls = failing(100, outage())
    with pytest.raises(StorageError, match=r"^x: the database has been unreachable for 0s \(\(builtins.Exception\) "):
        retry_transient(fn, "x", patience_s=0)  # no patience: one try more only once some time has passed
    assert len(calls) == 2 and clock.slept == [0.5]


@pytest.mark.parametrize("text", ["database or disk is full", "No space left on device", "DISK FULL"])
def test_a_full_disk_fails_at_once(clock, text):
    from sweeper.storage import retry_transient

    fn, calls = failing(100, outage(text))
    with pytest.raises(StorageError) as info:
        retry_transient(fn, "claiming a trial", patience_s=600)
    assert len(calls) == 1 and clock.slept == []
    assert str(info.value) == (f"claiming a trial: the database's disk is full ((builtins.Exception) {text}); "
                               "free space and re-run the same command: finished trials are kept")


def test_only_database_errors_are_retried(clock):
    from sweeper.storage import retry_transient

    fn, calls = failing(1, KeyError("no such study"))
    with pytest.raises(KeyError):
        retry_transient(fn, "x", patience_s=600)
    assert len(calls) == 1 and clock.slept == []


# ------------------------------------------------------------------ what a database error is said as


def test_a_database_error_is_said_in_its_first_words_without_sqlalchemys_trailers():
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import OperationalError

    from sweeper.storage import _short, is_disk_full

    at_connect = OperationalError(None, None, Exception("connection failed"))  # no statement: only the trailer
    assert "(Background on this error" in str(at_connect)
    assert _short(at_connect) == "(builtins.Exception) connection failed"
    assert _short(OperationalError("SELECT 1", {}, Exception("x" * 300))) == "(builtins.Exception) " + "x" * 179

    class Quiet(Exception):
        pass

    assert _short(Quiet()) == "Quiet"  # no words: its kind
    wrapped = StorageInternalError("An exception is raised during the commit.")  # Optuna's, raised from the driver's
    wrapped.__cause__ = OperationalError("COMMIT", {}, Exception("server closed the connection"))
    assert _short(wrapped) == "(builtins.Exception) server closed the connection"
    context_only = StorageInternalError("commit failed")
    context_only.__context__ = OperationalError("COMMIT", {}, Exception("database or disk is full"))
    assert _short(context_only) == "(builtins.Exception) database or disk is full"
    assert is_disk_full(context_only) and not is_disk_full(wrapped)
    wrapped.__cause__ = OperationalError("COMMIT", {}, Exception("No space left on device"))
    assert is_disk_full(wrapped)


def test_a_missing_driver_is_found_under_the_error_that_wraps_it():
    from sweeper.storage import driver_missing

    try:
        import no_such_db_driver  # noqa: F401
    except ModuleNotFoundError as missing:
        inner = missing
    by_cause, by_context = ImportError("the storage could not import its driver"), ImportError("failed")
    by_cause.__cause__, by_context.__context__ = inner, inner
    for outer in (by_cause, by_context, inner):
        assert driver_missing("mysql+pymysql://u:pw@h/db", outer) == (
            "storage='mysql+pymysql://u:***@h/db' needs a database driver (No module named 'no_such_db_driver'): "
            "pip install pymysql")
    # the scheme is what comes before the first ://
    assert driver_missing("MSSQL://h/db?next=x://y", inner).endswith(": pip install pyodbc")
    assert driver_missing("firebird://h/db", ImportError("no fdb")) == (
        "storage='firebird://h/db' needs a database driver (no fdb): install the Python driver SQLAlchemy uses for "
        "firebird://")


def test_reading_a_database_whose_driver_is_missing_says_what_to_install():
    from sweeper.storage import open_storage_readonly

    with pytest.raises(StorageError) as info:
        open_storage_readonly("postgresql+asyncpg://u:pw@h/db")
    assert str(info.value) == ("storage='postgresql+asyncpg://u:***@h/db' needs a database driver (No module named "
                               "'asyncpg'): pip install asyncpg")


def test_a_password_is_scrubbed_from_a_drivers_words_as_a_whole():
    from sweeper.storage import scrubbed

    assert scrubbed("auth failed for s=cr at h", "postgresql://u@h/db?password=s=cr&x=1") == "auth failed for *** at h"
    assert scrubbed("bad pw hunter2 for u", "postgresql://u:hunter2@h/db") == "bad pw *** for u"
    assert scrubbed("nothing secret XXXX", "postgresql://u@h/db") == "nothing secret XXXX"
    assert scrubbed("nothing secret", None) == "nothing secret"


def test_a_journal_to_read_is_an_empty_file_or_one_of_journal_records(tmp_path):
    from sweeper.storage import open_storage_readonly

    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    assert open_storage_readonly(f"journal:///{empty}").get_all_studies() == []
    for name, content in (("binary.log", b"\xff\xfe\x00binary\n"), ("text.log", b'{"no": "op code"}\n')):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(StorageError) as info:
            open_storage_readonly(f"journal:///{tmp_path / name}")
        assert str(info.value) == f"{tmp_path / name} is not an Optuna journal: its first line is not a journal record"


def test_a_database_that_cannot_be_reached_or_read_is_one_line_without_its_password(tmp_path):
    import optuna

    from sweeper.storage import open_storage_readonly

    with pytest.raises(StorageError) as info:  # nothing listens on port 1: refused at once
        open_storage_readonly("postgresql://u:s3cret@127.0.0.1:1/db")
    said = str(info.value)
    assert said.startswith("postgresql://u:***@127.0.0.1:1/db cannot be reached: connection failed: connection to "
                           "server at \"127.0.0.1\", port 1 failed: Connection refused")
    assert "s3cret" not in said and "\n" not in said and info.value.__suppress_context__
    corrupt = tmp_path / "corrupt.db"  # SQLite's header over a body that is none
    corrupt.write_bytes(b"SQLite format 3\x00" + b"\x00garbage" * 200)
    with pytest.raises(StorageError) as info:
        open_storage_readonly(f"sqlite:///{corrupt}")
    assert str(info.value) == (f"{corrupt} is not a readable SQLite database (corrupted, or not a sweep database): "
                               "file is not a database")
    damaged = tmp_path / "damaged.db"  # a sweep's database with every page but the first overwritten in part
    study = optuna.create_study(storage=f"sqlite:///{damaged}", study_name="s")
    for x in range(50):
        study.enqueue_trial({"x": x})
    body = bytearray(damaged.read_bytes())
    for page in range(4096, len(body), 4096):
        body[page:page + 8] = b"\xff" * 8
    damaged.write_bytes(bytes(body))
    with pytest.raises(StorageError) as info:
        open_storage_readonly(f"sqlite:///{damaged}")
    assert str(info.value) == (f"{damaged} is not a readable SQLite database (corrupted, or not a sweep database): "
                               "database disk image is malformed")
    text = tmp_path / "notes.db"  # no SQLite header at all: said without a cause
    text.write_text("not a database\n")
    with pytest.raises(StorageError) as info:
        open_storage_readonly(f"sqlite:///{text}")
    assert str(info.value) == f"{text} is not a readable SQLite database (corrupted, or not a sweep database)"


def test_reading_a_database_that_is_missing_not_a_sweep_too_old_or_damaged_says_which(tmp_path):
    import sqlite3

    import optuna

    from sweeper.storage import open_storage_readonly

    with pytest.raises(StorageError) as info:
        open_storage_readonly(f"sqlite:///{tmp_path}/none.db")
    assert str(info.value) == (f"no sweep database at {tmp_path}/none.db (sqlite:///{tmp_path}/none.db); run a sweep "
                               "first or pass --storage")
    for url, said in (("notaurl", "storage='notaurl' is not a storage URL; "),
                      ("foo://u:pw@h/x", "storage='foo://u:***@h/x' has an unknown scheme; ")):
        with pytest.raises(StorageError, match=f"^{re.escape(said)}"):
            open_storage_readonly(url)
    other = tmp_path / "other.db"  # another program's tables, two of them with Optuna's names
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE studies (x)")
        db.execute("CREATE TABLE trials (y)")
    with pytest.raises(StorageError) as info:
        open_storage_readonly(f"sqlite:///{other}")
    assert str(info.value) == (f"sqlite:///{other} holds no sweep: it has no Optuna tables (an empty database, or "
                               "another program's)")
    old = tmp_path / "old.db"
    optuna.create_study(storage=f"sqlite:///{old}", study_name="s")
    with sqlite3.connect(old) as db:
        db.execute("UPDATE alembic_version SET version_num = 'v1.3.0.a'")  # as Optuna 1.3 left it
    with pytest.raises(StorageError) as info:
        open_storage_readonly(f"sqlite:///{old}")
    assert str(info.value) == (
        f"sqlite:///{old} was written by an Optuna version this one cannot read ({optuna.__version__}): upgrade it "
        "with `optuna storage upgrade --storage URL` (back it up first), or install the Optuna version that wrote it")
    with sqlite3.connect(old) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [("v1.3.0.a",)]  # left as it was
    with sqlite3.connect(old) as db:
        db.execute("UPDATE alembic_version SET version_num = 'v9.9.0.a'")  # as a later Optuna would leave it
    with pytest.raises(StorageError) as info:
        open_storage_readonly(f"sqlite:///{old}")
    assert str(info.value) == (f"sqlite:///{old} was written by a newer Optuna than this one ({optuna.__version__}): "
                               "pip install -U optuna")
    with sqlite3.connect(old) as db:  # Optuna's tables are all there; the schema's version is not
        db.execute("DELETE FROM alembic_version")
        db.execute("DROP TABLE version_info")
        db.execute("CREATE TABLE version_info (x INTEGER)")
    with pytest.raises(StorageError) as info:  # said in Optuna's words (the read-only open's last line)
        open_storage_readonly(f"sqlite:///{old}")
    assert str(info.value) == (f"cannot open sqlite:///{old}: An exception is raised during the commit. This typically "
                               "happens due to invalid data in the commit, e.g. exceeding max length.")


def test_a_journal_whose_records_cannot_be_replayed_is_said_so(tmp_path):
    from sweeper.storage import open_storage_readonly

    journal = tmp_path / "bad.log"
    journal.write_text('{"op_code": 999, "worker_id": "x"}\n' + "\n" * 10)
    with pytest.raises(StorageError) as info:
        open_storage_readonly(f"journal:///{journal}")
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    with pytest.raises(Exception) as optunas:  # what Optuna says of it, as the line's end
        JournalStorage(JournalFileBackend(str(journal)))
    assert str(info.value) == f"{journal} is not a readable Optuna journal: {' '.join(str(optunas.value).split())}"


def test_a_study_is_created_once_then_loaded_with_the_sampler_and_pruner_given_and_its_directions_kept(tmp_path):
    import optuna

    from sweeper.storage import load_or_create_study

    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    first = load_or_create_study(storage, "s", ["maximize", "minimize"], None, None)
    first.add_trial(optuna.trial.create_trial(values=[1.0, 2.0]))
    sampler, pruner = optuna.samplers.RandomSampler(seed=3), optuna.pruners.PercentilePruner(25.0)
    again = load_or_create_study(storage, "s", ["maximize", "minimize"], sampler, pruner)
    assert again.sampler is sampler and again.pruner is pruner and len(again.trials) == 1
    assert [d.name for d in again.directions] == ["MAXIMIZE", "MINIMIZE"]
    with pytest.raises(StorageError) as info:
        load_or_create_study(storage, "s", ["maximize", "maximize"], sampler, pruner)
    assert str(info.value) == ("study 's' exists with direction ['maximize', 'minimize'], not ['maximize', 'maximize']; "
                               "use another hydra.sweeper.study_name or the same direction")
    other = load_or_create_study(storage, "t", ["minimize"], sampler, pruner)
    assert other.study_name == "t" and other.sampler is sampler and other.pruner is pruner
    assert [d.name for d in other.directions] == ["MINIMIZE"]


def test_a_password_is_a_non_empty_one_even_where_sqlalchemy_cannot_read_the_url():
    from sweeper.storage import has_password

    assert not has_password("postgresql://u:@h/db")  # an empty password is none
    assert has_password("postgresql://u:pw@h:notaport/db")  # SQLAlchemy cannot read the port; the pattern sees it
    assert not has_password("postgresql://u@h:notaport/db")
    assert not has_password("journal:///tmp/u:pw@x.log")  # a journal's path holds no password


def test_a_storage_url_written_with_a_password_is_refused_and_one_read_from_the_environment_is_not():
    from sweeper.storage import refuse_written_password

    with pytest.raises(StorageError) as info:
        refuse_written_password("postgresql://u:s3cret@db/sweeps")
    assert str(info.value) == (
        "hydra.sweeper.storage='postgresql://u:***@db/sweeps' holds a password, and Hydra writes the command line "
        "and config to disk: put the URL in $SWEEP_STORAGE (or the password in PGPASSWORD / ~/.pgpass) instead")
    for raw in ("${oc.env:SWEEP_STORAGE}", "postgresql://u:${oc.env:PW}@db/sweeps",  # resolved later, never written
                "postgresql://u@db/sweeps", "sqlite:///outputs/sweeps.db", None, {"_target_": "x"}):
        refuse_written_password(raw)


def test_a_sqlite_storage_waits_for_the_files_lock_and_a_missing_driver_says_what_to_install(tmp_path):
    from sweeper.storage import SQLITE_TIMEOUT_S

    storage = open_storage(f"sqlite:///{tmp_path}/sweeps.db")
    assert storage.engine_kwargs == {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} and SQLITE_TIMEOUT_S == 60
    with pytest.raises(StorageError) as info:  # the driver is imported as the storage is made, past the URL's check
        open_storage("postgresql+asyncpg://u:pw@h/db")
    assert str(info.value) == ("storage='postgresql+asyncpg://u:***@h/db' needs a database driver (No module named "
                               "'asyncpg'): pip install asyncpg")


def test_a_storage_files_folders_are_made_and_one_that_cannot_be_is_one_line(tmp_path):
    open_storage(f"sqlite:///{tmp_path}/a/b/sweeps.db")  # every missing folder up to the file
    open_storage(f"journal:///{tmp_path}/c/d/sweeps.log")
    assert (tmp_path / "a" / "b" / "sweeps.db").is_file() and (tmp_path / "c" / "d" / "sweeps.log").is_file()
    open_storage(f"sqlite:///{tmp_path}/a/b/sweeps.db")  # and an existing one is fine
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError) as info:
        open_storage(f"sqlite:///{tmp_path}/file/sub/sweeps.db")
    assert str(info.value) == (f"storage='sqlite:///{tmp_path}/file/sub/sweeps.db': its folder {tmp_path}/file/sub "
                               "cannot be created (Not a directory)")


def test_a_sweeps_storage_that_cannot_be_opened_is_one_line_and_a_file_that_is_no_database_is_said_so(tmp_path):
    import sqlite3

    import optuna

    corrupt = tmp_path / "corrupt.db"  # SQLite's header over a body that is none
    corrupt.write_bytes(b"SQLite format 3\x00" + b"\x00garbage" * 200)
    with pytest.raises(StorageError) as info:
        open_storage(f"sqlite:///{corrupt}")
    assert str(info.value) == (f"{corrupt} is not a readable SQLite database (corrupted, or not a sweep database): "
                               "file is not a database")  # as the results tool says it; no SQLAlchemy trailer
    (tmp_path / "folder.db").mkdir()
    with pytest.raises(StorageError) as info:
        open_storage(f"sqlite:///{tmp_path}/folder.db")
    assert str(info.value) == f"storage='sqlite:///{tmp_path}/folder.db' cannot be opened: unable to open database file"
    assert info.value.__suppress_context__
    old = tmp_path / "old.db"  # Optuna's own error (not SQLAlchemy's) in its words: a schema it cannot use
    optuna.create_study(storage=f"sqlite:///{old}", study_name="s")
    with sqlite3.connect(old) as db:
        db.execute("UPDATE alembic_version SET version_num = 'v1.3.0.a'")
    with pytest.raises(StorageError) as info:  # said as the results tool says it, with what to do
        open_storage(f"sqlite:///{old}")
    assert str(info.value) == (
        f"sqlite:///{old} was written by an Optuna version this one cannot read ({optuna.__version__}): upgrade it "
        "with `optuna storage upgrade --storage URL` (back it up first), or install the Optuna version that wrote it")
    assert info.value.__suppress_context__
    with sqlite3.connect(old) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [("v1.3.0.a",)]  # not upgraded
        db.execute("UPDATE alembic_version SET version_num = 'v9.9.0.a'")  # as a later Optuna would leave it
    with pytest.raises(StorageError) as info:
        open_storage(f"sqlite:///{old}")
    assert str(info.value) == (f"sqlite:///{old} was written by a newer Optuna than this one ({optuna.__version__}): "
                               "pip install -U optuna")


def test_a_postgres_storage_gives_up_on_a_silent_server_in_seconds_and_pings_its_pooled_connections(postgres):
    storage = open_storage(postgres.url())
    assert storage.engine_kwargs == {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}


def test_a_study_is_held_to_the_search_space_it_was_begun_over():
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from sweeper.storage import SEARCH_SPACE_ATTR, check_search_space

    def study(name):
        return optuna.create_study(study_name=name, storage=storage)

    def recorded(s):
        return storage.get_study_system_attrs(s._study_id)[SEARCH_SPACE_ATTR]

    def refused(s, space, allow=False):
        with pytest.raises(StorageError) as info:
            check_search_space(s, space, allow_change=allow)
        return str(info.value)

    storage = optuna.storages.InMemoryStorage()
    toy, x2, x9, y = study("toy"), IntDistribution(0, 2), IntDistribution(0, 9), FloatDistribution(0.0, 1.0)
    check_search_space(toy, {"x": x2}, allow_change=False)  # the first sweep records its space
    check_search_space(toy, {"x": x2}, allow_change=False)
    assert refused(toy, {"x": x9}) == (
        "study 'toy' was begun over the search space {x: int[0,2]}, not {x: int[0,9]}: give a new "
        "hydra.sweeper.study_name, or set hydra.sweeper.allow_search_space_change=true to go on")
    check_search_space(toy, {"y": y, "x": x9}, allow_change=True)  # allowed: the new space is recorded
    assert set(recorded(toy)) == {"x", "y"}
    assert refused(toy, {"x": x9}).startswith(
        "study 'toy' was begun over the search space {x: int[0,9], y: float[0,1]}, not {x: int[0,9]}:")

    old = study("old")  # begun before spaces were recorded: compared with its trials' own distributions
    old.tell(old.ask({"x": x2, "own": y}), 1.0)  # "own": a custom search space's suggest_*, not ours: left out
    check_search_space(old, {"x": x2}, allow_change=False)
    assert set(recorded(old)) == {"x"}
    older = study("older")
    older.tell(older.ask({"own": y}), 1.0)
    assert refused(older, {"x": x2}).startswith(
        "study 'older' was begun over the search space {(none of these)}, not {x: int[0,2]}:")
    check_search_space(study("new"), {"x": x2}, allow_change=False)  # no trials, nothing recorded: any space

    chosen = study("chosen")  # Optuna keeps a categorical's choices for the life of a study, allowed or not
    check_search_space(chosen, {"c": CategoricalDistribution(["a", "b"]), "x": x2}, allow_change=False)
    for allow in (False, True):
        said = refused(chosen, {"c": CategoricalDistribution(["a", "b", "z"]), "x": x2}, allow)
        if allow:
            assert said == ("study 'chosen' chose c from choice(a,b); Optuna cannot change a choice's options within "
                            "a study (here choice(a,b,z)): give a new hydra.sweeper.study_name")
    check_search_space(chosen, {"c": CategoricalDistribution(["a", "b"]), "x": x9}, allow_change=True)

