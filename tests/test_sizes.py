import pytest

from mtlbook.sizes import SIZES, chapter_size


def test_chapter_size_reads_the_environment(monkeypatch):
    monkeypatch.delenv("MTLBOOK_SIZE", raising=False)
    assert chapter_size() == "small"
    monkeypatch.setenv("MTLBOOK_SIZE", "")
    assert chapter_size() == "small"
    for size in SIZES:
        monkeypatch.setenv("MTLBOOK_SIZE", size)
        assert chapter_size() == size
    monkeypatch.setenv("MTLBOOK_SIZE", " FULL ")
    assert chapter_size() == "full"


def test_chapter_size_argument_overrides_the_environment(monkeypatch):
    monkeypatch.setenv("MTLBOOK_SIZE", "full")
    assert chapter_size("small") == "small"
    monkeypatch.delenv("MTLBOOK_SIZE")
    assert chapter_size(default="full") == "full"


def test_chapter_size_rejects_unknown_sizes(monkeypatch):
    with pytest.raises(ValueError, match="`size`.*Received: size='large'"):
        chapter_size("large")
    with pytest.raises(ValueError, match="`default`"):
        chapter_size(default="medium")
    monkeypatch.setenv("MTLBOOK_SIZE", "huge")
    with pytest.raises(ValueError, match="MTLBOOK_SIZE='huge'"):
        chapter_size()
