"""The traffic simulator's ground truth: folder names by default, an eval set's qrels on demand."""

import random

from feedback.simulate import ClickModel, is_relevant, qrels_relevance, session_events
from visearch.cli.main import main

QRELS = {"q1": {"a": 1, "b": 0, "c": 3}}


def test_judged_documents_are_relevant_and_everything_else_is_not() -> None:
    relevant = qrels_relevance(QRELS)
    assert relevant("q1", "a") and relevant("q1", "c")
    assert not relevant("q1", "b")  # judged, grade 0
    assert not relevant("q1", "z")  # unjudged
    assert not relevant("unknown-query", "a")


def test_default_relevance_is_the_shared_folder() -> None:
    assert is_relevant("animals-birds-cardinal", "animals-birds-robin")
    assert not is_relevant("animals-birds-cardinal", "animals-cats-tabby")


def _response(ids: list[str]) -> dict[str, object]:
    return {"search_id": "s1", "model_version": "v", "results": [{"image_id": i} for i in ids]}


def test_clicks_follow_the_given_relevance() -> None:
    """Users who never click irrelevant results click only what the qrels judge relevant."""
    model = ClickModel(examine_decay=1.0, p_click_relevant=1.0, p_click_irrelevant=0.0)
    events = session_events(random.Random(0), model, "u", "q1", _response(["a", "b", "z", "c"]),
                            1000.0, qrels_relevance(QRELS))  # fmt: skip
    clicked = [e["displayed_image_id"] for e in events if e["type"] == "click"]
    assert clicked == ["a", "c"]
    # the folder rule would have judged none of these ids relevant
    folder = session_events(random.Random(0), model, "u", "q1", _response(["a", "b", "z", "c"]),
                            1000.0)  # fmt: skip
    assert not [e for e in folder if e["type"] == "click"]


def test_a_missing_qrels_file_is_a_clear_error(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nope.txt"
    argv = ["simulate-traffic", "--url", "http://127.0.0.1:9", "--qrels", str(missing)]
    assert main(argv) == 1
    assert "does not exist" in capsys.readouterr().err


def test_folder_relevance_reads_folders_not_id_text(tmp_path) -> None:
    """File names with ``-`` fool the id heuristic; the source tree's folders do not."""
    from PIL import Image

    from feedback.simulate import folder_relevance
    from visearch.catalog.corpus import image_folders

    for relative in ["animals/birds/adelaide-rosella.png", "animals/birds/robin.png",
                     "animals/cats/tabby.png"]:  # fmt: skip
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / relative)
    folders = image_folders(tmp_path)
    assert folders["animals-birds-adelaide-rosella"] == "animals/birds"
    relevant = folder_relevance(folders)
    assert relevant("animals-birds-adelaide-rosella", "animals-birds-robin")
    assert not is_relevant("animals-birds-adelaide-rosella", "animals-birds-robin")
    assert not relevant("animals-birds-robin", "animals-cats-tabby")
    assert relevant("other-x-a", "other-x-b")  # not under the tree: the id heuristic
