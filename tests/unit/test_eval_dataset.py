"""Evaluation sets on disk: qrels, ids from file stems, and the errors bad sets get."""

import pytest
from PIL import Image

from visearch.evaluation.dataset import (
    EvalSetError,
    format_qrels,
    images_by_stem,
    load_eval_set,
    read_qrels,
)


def _image(path, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 12), colour).save(path)
    return path


@pytest.fixture
def small_set(tmp_path):
    for name in ("a.png", "b.jpg", "sub/c.png"):
        _image(tmp_path / "corpus" / name)
    _image(tmp_path / "queries" / "q1.jpg")
    _image(tmp_path / "queries" / "a.png")  # a corpus image searched by id
    (tmp_path / "qrels.txt").write_text("q1 0 a 1\nq1 0 c 3\nq1 0 b 0\na 0 c 1\n")
    return tmp_path


def test_qrels_round_trip_in_trec_format(tmp_path):
    qrels = {"q2": {"x": 1}, "q1": {"b": 0, "a": 5}}
    text = format_qrels(qrels)
    assert text == "q1 0 a 5\nq1 0 b 0\nq2 0 x 1\n"
    path = tmp_path / "qrels.txt"
    path.write_text("# comment\n\n" + text)
    assert read_qrels(path) == qrels


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("q1 0 a", "expected 'query 0 doc relevance'"),
        ("q1 0 a x", "not an integer"),
        ("q1 0 a 9", "outside 0..5"),
    ],
)
def test_bad_qrels_lines_name_the_line(tmp_path, line, message):
    path = tmp_path / "qrels.txt"
    path.write_text(f"q0 0 a 1\n{line}\n")
    with pytest.raises(EvalSetError, match=f"qrels.txt:2: .*{message}"):
        read_qrels(path)


def test_ids_are_file_stems(small_set):
    assert sorted(images_by_stem(small_set / "corpus")) == ["a", "b", "c"]
    loaded = load_eval_set(small_set / "corpus", small_set / "queries", small_set / "qrels.txt")
    assert loaded.qrels["q1"] == {"a": 1, "c": 3, "b": 0}
    assert sorted(loaded.judged_queries) == ["a", "q1"]


def test_a_repeated_stem_is_an_error(small_set):
    _image(small_set / "corpus" / "other" / "a.jpg")
    with pytest.raises(EvalSetError, match="share the id 'a'"):
        images_by_stem(small_set / "corpus")


def test_qrels_naming_a_missing_document_is_an_error(small_set):
    (small_set / "qrels.txt").write_text("q1 0 a 1\nq1 0 nowhere 1\n")
    with pytest.raises(EvalSetError, match=r"query 'q1' name documents missing .*nowhere"):
        load_eval_set(small_set / "corpus", small_set / "queries", small_set / "qrels.txt")


def test_qrels_naming_an_unknown_query_is_an_error(small_set):
    (small_set / "qrels.txt").write_text("q1 0 a 1\nghost 0 a 1\n")
    with pytest.raises(EvalSetError, match=r"have no image in .*ghost"):
        load_eval_set(small_set / "corpus", small_set / "queries", small_set / "qrels.txt")


def test_a_query_judging_itself_is_an_error(small_set):
    (small_set / "qrels.txt").write_text("a 0 a 1\n")
    with pytest.raises(EvalSetError, match="judges itself"):
        load_eval_set(small_set / "corpus", small_set / "queries", small_set / "qrels.txt")


def test_a_set_without_relevant_documents_is_an_error(small_set):
    (small_set / "qrels.txt").write_text("q1 0 a 0\n")
    with pytest.raises(EvalSetError, match=r"no query .* has a relevant document"):
        load_eval_set(small_set / "corpus", small_set / "queries", small_set / "qrels.txt")


def test_missing_folders_and_files_are_errors(small_set):
    with pytest.raises(EvalSetError, match="is not a directory"):
        load_eval_set(small_set / "nope", small_set / "queries", small_set / "qrels.txt")
    with pytest.raises(EvalSetError, match="does not exist"):
        load_eval_set(small_set / "corpus", small_set / "queries", small_set / "none.txt")
