"""``visearch eval build photos`` from the real Debian packages the Makefile installs.

No skip: a missing package fails with the package's name (make system-deps).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from visearch.evaluation.dataset import load_set_dir, read_qrels
from visearch.evaluation.photo_edits import EDIT_KINDS
from visearch.evaluation.photo_sources import SOURCE_PACKAGES, dpkg_files, split_of
from visearch.evaluation.photos import PhotoSetOptions, build_photo_set


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_source_package_is_installed() -> None:
    for source in SOURCE_PACKAGES:
        assert source.select(dpkg_files(source.package)), source.package


def test_a_small_photo_set_from_the_installed_packages(tmp_path: Path) -> None:
    options = PhotoSetOptions(
        split="heldout", seed=3, crops=2, per_edit=1, corpus_size=16, max_photos=6
    )
    summary = build_photo_set(tmp_path / "set", options, sources_out=tmp_path / "sources.tsv")
    root = tmp_path / "set"
    assert sorted(p.name for p in root.iterdir()) == [
        "corpus",
        "manifest.json",
        "qrels.txt",
        "queries",
    ]
    eval_set = load_set_dir(root)
    manifest = json.loads((root / "manifest.json").read_text())

    # corpus: sources, distractors, planted near-duplicates and stamps, each listed with its file
    entries = {e["id"]: e for e in manifest["corpus_files"]}
    assert set(entries) == set(eval_set.corpus) and len(entries) == 16 == summary["corpus"]
    roles = [e["role"] for e in entries.values()]
    assert roles.count("source") == 4 and roles.count("distractor") == 2
    assert roles.count("near-duplicate") == 1 and roles.count("stamp") == 9
    for image_id, entry in entries.items():
        assert _sha(eval_set.corpus[image_id]) == entry["sha256"]
        if entry["role"] == "near-duplicate":
            assert _sha(Path(entry["path"])) == entry["source_sha256"]
        else:
            assert _sha(Path(entry["path"])) == entry["sha256"]
            assert image_id == f"img-{entry['sha256'][:12]}"
        if entry["role"] in ("source", "distractor"):
            assert split_of(entry["sha256"]) == "heldout"
            assert entry["package"] in {s.package for s in SOURCE_PACKAGES}
        if entry["role"] == "stamp":
            assert entry["package"] == "tuxpaint-stamps-default"

    # queries: two crops and one of each edit kind, ids saying their kind
    kinds = {q: info["kind"] for q, info in manifest["queries"].items()}
    assert sorted(kinds) == sorted(eval_set.queries)
    assert sorted(kinds.values()) == sorted(["crop", "crop", *EDIT_KINDS])
    for query, kind in kinds.items():
        assert query.startswith("crop-" if kind == "crop" else f"edit-{kind}-")
    assert summary["queries_per_kind"] == {"crop": 2, **{k: 1 for k in EDIT_KINDS}}
    area = manifest["queries"]["crop-0000"]["params"]["area"]
    assert 0.03 <= area <= 0.15

    # qrels: each query judges its source, and the source's near-duplicate when it has one
    qrels = read_qrels(root / "qrels.txt")
    dup_of = {e["of"]: image_id for image_id, e in entries.items() if e["role"] == "near-duplicate"}
    for query, info in manifest["queries"].items():
        expected = {info["source"]: 1}
        if info["source"] in dup_of:
            expected[dup_of[info["source"]]] = 1
        assert qrels[query] == expected
        assert entries[info["source"]]["role"] == "source"
    assert eval_set.judged_queries and len(eval_set.judged_queries) == 13

    rows = (tmp_path / "sources.tsv").read_text().splitlines()
    assert rows[0] == "package\tpath\tsha256\tstatus" and len(rows) > 100
    assert any("\tkept: tune" in r for r in rows) and any("\tkept: heldout" in r for r in rows)

    # the same options give the same set
    build_photo_set(tmp_path / "again", options)
    assert (tmp_path / "again" / "qrels.txt").read_text() == (root / "qrels.txt").read_text()
    for query, path in eval_set.queries.items():
        assert _sha(path) == _sha(tmp_path / "again" / "queries" / path.name), query
