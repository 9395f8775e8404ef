"""Reading upload bytes: inline base64 or file:// URIs confined to allowed roots."""

import base64
import os
import threading

import pytest

from streams import image_source
from streams.image_source import ImageSourceError, file_uri, read_image_bytes
from streams.schemas import ImageUploaded

MAX = 1000


def _event(uri="", image_b64=""):
    return ImageUploaded(
        image_id="img-1", owner_id="o", uploaded_at=1.0, uri=uri, image_b64=image_b64
    )


def _code(event, roots, max_bytes=MAX):
    with pytest.raises(ImageSourceError) as info:
        read_image_bytes(event, roots, max_bytes)
    return info.value.code


@pytest.fixture
def root(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "cat.img").write_bytes(b"cat bytes")
    (tmp_path / "secret").write_bytes(b"top secret")
    return images


def test_inline_bytes(root):
    event = _event(image_b64=base64.b64encode(b"inline!").decode())
    assert read_image_bytes(event, [root], MAX) == b"inline!"


def test_inline_too_many_bytes(root):
    event = _event(image_b64=base64.b64encode(b"x" * 11).decode())
    assert _code(event, [root], max_bytes=10) == "too_many_bytes"
    assert read_image_bytes(event, [root], 11) == b"x" * 11


def test_bad_inline_base64(root):
    assert _code(_event(image_b64="not*base64"), [root]) == "bad_inline"


def test_file_inside_root(root):
    assert read_image_bytes(_event(uri=file_uri(root / "cat.img")), [root], MAX) == b"cat bytes"


def test_file_uri_spellings(root):
    assert read_image_bytes(_event(uri=f"file://{root}/cat.img"), [root], MAX) == b"cat bytes"
    uri = f"file://localhost{root}/cat.img"
    assert read_image_bytes(_event(uri=uri), [root], MAX) == b"cat bytes"


def test_percent_encoded_name(root):
    (root / "a b.img").write_bytes(b"spaced")
    assert read_image_bytes(_event(uri=file_uri(root / "a b.img")), [root], MAX) == b"spaced"


def test_second_allowed_root(tmp_path, root):
    other = tmp_path / "other"
    other.mkdir()
    (other / "dog.img").write_bytes(b"dog")
    assert read_image_bytes(_event(uri=file_uri(other / "dog.img")), [root, other], MAX) == b"dog"
    assert _code(_event(uri=file_uri(other / "dog.img")), [root]) == "forbidden_path"


@pytest.mark.parametrize(
    "suffix", ["/../secret", "/%2e%2e/secret", "/../images2/x", "/./../secret"]
)
def test_path_traversal_is_forbidden(root, suffix):
    assert _code(_event(uri=f"file://{root}{suffix}"), [root]) == "forbidden_path"


def test_absolute_path_outside_root(root):
    assert _code(_event(uri="file:///etc/passwd"), [root]) == "forbidden_path"


def test_sibling_with_common_prefix_is_forbidden(tmp_path, root):
    sibling = tmp_path / "images-evil"
    sibling.mkdir()
    (sibling / "x.img").write_bytes(b"x")
    assert _code(_event(uri=file_uri(sibling / "x.img")), [root]) == "forbidden_path"


def test_symlink_escaping_root(tmp_path, root):
    (root / "link.img").symlink_to(tmp_path / "secret")
    uri = f"file://{root}/link.img"
    assert _code(_event(uri=uri), [root]) == "forbidden_path"


def test_symlinked_directory_escaping_root(tmp_path, root):
    (root / "sub").symlink_to(tmp_path)
    assert _code(_event(uri=f"file://{root}/sub/secret"), [root]) == "forbidden_path"


def test_symlink_inside_root_is_allowed(root):
    (root / "alias.img").symlink_to(root / "cat.img")
    assert read_image_bytes(_event(uri=f"file://{root}/alias.img"), [root], MAX) == b"cat bytes"


@pytest.mark.parametrize(
    "uri",
    [
        "http://example.com/cat.jpg",
        "https://example.com/cat.jpg",
        "s3://bucket/cat.jpg",
        "/plain/path.jpg",
        "file://otherhost/etc/passwd",
    ],
)
def test_unsupported_uri(root, uri):
    assert _code(_event(uri=uri), [root]) == "unsupported_uri"


def test_missing_file(root):
    assert _code(_event(uri=file_uri(root / "nope.img")), [root]) == "missing_file"


def test_directory_is_missing_file(root):
    (root / "dir").mkdir()
    assert _code(_event(uri=f"file://{root}/dir"), [root], 10**6) == "missing_file"


def test_file_too_many_bytes(root):
    (root / "big.img").write_bytes(b"b" * (MAX + 1))
    assert _code(_event(uri=file_uri(root / "big.img")), [root]) == "too_many_bytes"
    (root / "fits.img").write_bytes(b"b" * MAX)
    assert len(read_image_bytes(_event(uri=file_uri(root / "fits.img")), [root], MAX)) == MAX


def test_nul_byte_in_uri_is_an_image_source_error(root):
    with pytest.raises(ImageSourceError):
        read_image_bytes(_event(uri=f"file://{root}/cat%00.img"), [root], MAX)


def test_in_the_image_store_an_event_may_only_name_its_own_file(root):
    """Otherwise an upload under a new id could index a private image's pixels as its own."""
    (root / "img-1.img").write_bytes(b"own bytes")
    own = _event(uri=file_uri(root / "img-1.img"))
    assert read_image_bytes(own, [root], MAX, store_root=root) == b"own bytes"
    with pytest.raises(ImageSourceError) as info:
        read_image_bytes(_event(uri=file_uri(root / "cat.img")), [root], MAX, store_root=root)
    assert info.value.code == "forbidden_path"
    (root / "alias.img").symlink_to(root / "img-1.img")
    alias = _event(uri=f"file://{root}/alias.img")
    assert read_image_bytes(alias, [root], MAX, store_root=root) == b"own bytes"


def test_a_fifo_under_a_root_is_refused_without_blocking(root):
    fifo = root / "pipe.img"
    os.mkfifo(fifo)
    outcome: list[str] = []
    reader = threading.Thread(
        target=lambda: outcome.append(_code(_event(uri=file_uri(fifo)), [root])), daemon=True
    )
    reader.start()
    reader.join(timeout=5)  # reading a FIFO with no writer would wait for ever
    assert outcome == ["missing_file"]


def test_a_file_growing_past_the_limit_after_it_is_measured_is_cut_off(root, monkeypatch):
    grows = root / "grows.img"
    grows.write_bytes(b"g" * MAX)
    real_fstat = os.fstat

    def fstat_then_grow(fd):
        info = real_fstat(fd)
        grows.write_bytes(b"g" * (2 * MAX))  # appended between the measure and the read
        return info

    monkeypatch.setattr(image_source.os, "fstat", fstat_then_grow)
    assert _code(_event(uri=file_uri(grows)), [root]) == "too_many_bytes"


def test_a_path_that_changed_between_the_check_and_the_open_is_forbidden(root, monkeypatch):
    # What /proc shows for the descriptor when a directory of the path was swapped for
    # a symlink after the roots were checked: the file actually opened lies elsewhere.
    monkeypatch.setattr(image_source.os, "readlink", lambda _: str(root.parent / "secret"))
    assert _code(_event(uri=file_uri(root / "cat.img")), [root]) == "forbidden_path"
