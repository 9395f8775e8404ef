"""The example in docs/index-library.md runs as written (its asserts are the test)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "index-library.md"


def test_the_index_library_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    shard = namespace["shard"]
    assert len(shard) == 29_999  # img-42 deleted; img-new has no vectors
    assert {p.kind for p in shard.partitions.values()} == {"ann"}
