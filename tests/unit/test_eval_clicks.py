"""Click-derived judgements: grades from distinct sessions, unknown images left out."""

import json
from pathlib import Path

import pytest
from PIL import Image

from streams.schemas import LabeledPair, encode
from visearch.evaluation.clicks import MAX_GRADE, build_click_set
from visearch.evaluation.dataset import EvalSetError, load_set_dir


def _pair(search, query, clicked, position=1):
    return LabeledPair(
        pair_id=f"{search}:{position}",
        search_id=search,
        query_image_id=query,
        positive_image_id=clicked,
        position=position,
        weight=1.0,
        model_version="m",
        created_at=1.0,
        negative_image_ids=[],
    )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for folder, name, colour in [
        ("cats", "a", "red"),
        ("cats", "b", "blue"),
        ("dogs", "c", "green"),
    ]:
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), colour).save(root / folder / f"{name}.png")
    return root


def test_grades_count_distinct_sessions_capped_at_five(source: Path, tmp_path: Path) -> None:
    pairs = [_pair(f"s{i}", "cats-a", "cats-b") for i in range(7)]
    pairs += [_pair("s0", "cats-a", "cats-b", position=3)]  # same session again: not counted
    pairs += [_pair("s9", "cats-a", "dogs-c"), _pair("s10", "dogs-c", "cats-a")]
    pairs += [_pair("s11", "cats-a", "elsewhere-x")]  # not in the corpus: left out
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("".join(encode(p).decode() + "\n" for p in pairs))

    assert build_click_set(source, tmp_path / "set", pairs_file) == 2
    judged = load_set_dir(tmp_path / "set")
    assert judged.qrels == {"cats-a": {"cats-b": MAX_GRADE, "dogs-c": 1}, "dogs-c": {"cats-a": 1}}
    assert sorted(judged.corpus) == ["cats-a", "cats-b", "dogs-c"]


def test_pairs_naming_no_known_image_are_an_error(source: Path, tmp_path: Path) -> None:
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text(encode(_pair("s1", "x-1", "x-2")).decode() + "\n")
    with pytest.raises(EvalSetError, match="no click"):
        build_click_set(source, tmp_path / "set", pairs_file)
    with pytest.raises(EvalSetError, match="does not exist"):
        build_click_set(source, tmp_path / "set2", tmp_path / "missing.jsonl")


def test_interactions_are_graded_by_the_click_model(source: Path, tmp_path: Path) -> None:
    """cats-b is clicked whenever it is shown, dogs-c never: grades follow attractiveness,
    and events naming images outside the corpus are left out."""
    from streams.schemas import Interaction

    events = []
    for number in range(40):
        shown = ["cats-b", "dogs-c"] if number % 2 else ["dogs-c", "cats-b"]
        shown.append("elsewhere-x")
        for position, image in enumerate(shown):
            common = {
                "user_id": "u",
                "search_id": f"s{number}",
                "query_image_id": "cats-a",
                "displayed_image_id": image,
                "position": position,
                "timestamp": 1.0,
            }
            events.append(
                Interaction(event_id=f"{number}-i{position}", type="impression", **common)
            )
            if image == "cats-b":
                events.append(Interaction(event_id=f"{number}-c{position}", type="click", **common))
    log_file = tmp_path / "interactions.jsonl"
    log_file.write_text("".join(encode(e).decode() + "\n" for e in events))

    assert build_click_set(source, tmp_path / "set", interactions_file=log_file) == 1
    judged = load_set_dir(tmp_path / "set")
    assert judged.qrels == {"cats-a": {"cats-b": MAX_GRADE}}
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert manifest["grading"] == "click-model"
    assert (manifest["impressions"], manifest["impressions_left_out"]) == (80, 40)
    with pytest.raises(EvalSetError, match="either --pairs FILE or --interactions FILE"):
        build_click_set(source, tmp_path / "set3", log_file, log_file)
