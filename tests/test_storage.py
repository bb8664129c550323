"""Storage URLs checked before any work (sweeper.storage): the line for each kind of mistake, with any password
masked, from the check and from opening the storage."""

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
