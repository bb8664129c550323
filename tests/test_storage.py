"""Storage URLs checked before any work (sweeper.storage): the line for each kind of mistake, with any password
masked, from the check and from opening the storage."""

import pytest

from sweeper.storage import StorageError, check_url, open_storage

USE = "use sqlite:///file.db, postgresql://user@host/db, mysql+pymysql://user@host/db, journal:///path/file.log, or null"


@pytest.mark.parametrize("url", [None, "sqlite:///a.db", "sqlite:////abs/a.db", "journal:///x.log",
                                 "journal:////abs/x.log", "postgresql://u:secret@h:5432/db?x=1", "sqlite://"])
def test_storage_urls_that_name_a_storage_pass_the_check(url):
    check_url(url)


@pytest.mark.parametrize("url, said", [
    ("notaurl", f"storage='notaurl' is not a storage URL; {USE}"),
    ("http//x", f"storage='http//x' is not a storage URL; {USE}"),
    ("//u:pw@h/db", f"storage='//u:***@h/db' is not a storage URL; {USE}"),  # not a URL, its password masked all the same
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
