"""A shard's partitions scanned in one faiss call.

A shard's partitions share their IVF centroids (one :class:`~index.ann_plan.AnnPlan`),
so a query probes the same cells in each of them. Scanned one partition at a
time, a query at 100k vectors paid eight faiss calls, eight lock holds, eight
result arrays and their merge: ~150 µs of Python around ~90 µs of faiss work
(cProfile of 1,000 searches of the 1,000-centre mixture, 2 vCPUs). Here the
partitions' inverted lists are stacked into one list space
(``VStackInvertedLists``: partition ``p``'s list ``l`` is list ``p·nlist + l``)
under one IVF-Flat shell, and a query's cells, repeated per partition, are
scanned in one ``search_preassigned`` call.

The stacked lists share one id space only in name: each partition numbers its
rows from 0. So the scan returns list positions (faiss's ``store_pairs``), and
only the few winners are named: their partition from the list number, their
row from the list's ids. For the same reason no visibility bitmap can travel
with the scan (a bitmap is per partition); the scan fetches ``k`` plus a margin
for the rows a search must not return, and the caller checks each winner's
visibility. When the winners hold fewer than ``k`` visible images, the answer is
not known here, and the caller falls back to scanning partition by partition
through their bitmaps. Hidden rows never reach a result either way.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any, NamedTuple

import faiss
import numpy as np

from index.faiss_index import CoarseCells
from index.list_bounds import ListRadii


class JointMember(NamedTuple):
    """What a joint scan reads of one partition, taken under its read lock."""

    ivf: faiss.IndexIVFFlat
    row_image: list[str]
    visible: np.ndarray  # per row: may a search return it
    hidden_rows: int  # rows in the lists that a search must not return
    rows_per_image: int  # the most rows an image has (tiles), 1 without tiles
    radii: ListRadii | None  # bounds on the lists' rows, where they bound images too


# One query's rows from a joint scan: their scores and labels (list number << 32 |
# position in the list), best first. Plain lists: NamedTuples cost ~0.5 us a row.
JointFound = tuple[list[float], list[int]]


class JointLists:
    """One IVF-Flat view over several partitions' lists (built on the same centroids).

    Holds weak references to the partitions' indexes: the view points into
    their lists, so it is used only while each is still the index its
    partition searches (:meth:`serves`), which the caller's read locks keep
    true during a scan. A strong reference would keep a replaced index (a
    gigabyte at 1M vectors) alive until the next search.
    """

    def __init__(self, members: Sequence[JointMember]) -> None:
        first = members[0].ivf
        self.nlist = int(first.nlist)
        self.dim = int(first.d)
        self._indexes = [weakref.ref(member.ivf) for member in members]
        pointers = faiss.InvertedListsPtrVector()  # type: ignore[attr-defined]
        for member in members:
            pointers.push_back(member.ivf.invlists)
        self._stack = faiss.VStackInvertedLists(  # type: ignore[attr-defined]
            len(members), pointers.data()
        )
        self._shell_quantizer = faiss.IndexFlatIP(self.dim)  # never searched: cells come given
        shell = faiss.IndexIVFFlat(
            self._shell_quantizer, self.dim, self.nlist * len(members), faiss.METRIC_INNER_PRODUCT
        )
        shell.replace_invlists(self._stack, False)
        shell.is_trained = True
        self._shell = shell
        self._offsets = np.arange(len(members), dtype=np.int64) * self.nlist
        self._params: dict[int, faiss.SearchParametersIVF] = {}
        self._zeros: dict[tuple[int, ...], np.ndarray] = {}

    @staticmethod
    def can_join(members: Sequence[JointMember]) -> bool:
        """The members' lists can be stacked: same list count and dimension."""
        first = members[0].ivf
        return all(m.ivf.nlist == first.nlist and m.ivf.d == first.d for m in members)

    def serves(self, members: Sequence[JointMember]) -> bool:
        """The view points into exactly these members' indexes (under their locks)."""
        return len(members) == len(self._indexes) and all(
            ref() is member.ivf for ref, member in zip(self._indexes, members, strict=True)
        )

    def best(self, cells: CoarseCells, skip: np.ndarray | None, fetch: int) -> list[JointFound]:
        """Per query, the best ``fetch`` rows (hidden ones included) of ``cells``'
        lists in every member, best first, less any where ``skip`` (members x
        queries x nprobe) is true; fewer when the lists hold fewer. Rows are
        labels (list, position) until :meth:`top_images` names them."""
        cells.pointers()
        queries = len(cells.queries)
        # queries x members x nprobe: the same cells, one list space per member
        stacked = cells.cells[:, None, :] + self._offsets[None, :, None]
        if skip is not None:
            stacked = np.where(skip.transpose(1, 0, 2), -1, stacked)
        assigned = np.ascontiguousarray(stacked.reshape(queries, -1))
        # An IVF-Flat scan does not read its cells' coarse scores: any will do.
        assigned_scores = self._zeros.get(assigned.shape)
        if assigned_scores is None:
            assigned_scores = self._zeros[assigned.shape] = np.zeros(assigned.shape, np.float32)
        scores = np.empty((queries, fetch), dtype=np.float32)
        labels = np.empty((queries, fetch), dtype=np.int64)
        self._shell.search_preassigned_c(  # type: ignore[attr-defined]
            queries,
            faiss.swig_ptr(cells.queries),
            fetch,
            faiss.swig_ptr(assigned),
            faiss.swig_ptr(assigned_scores),
            faiss.swig_ptr(scores),
            faiss.swig_ptr(labels),
            True,  # store_pairs: labels are (list, position), named by top_images
            self._search_params(assigned.shape[1]),
        )
        return list(zip(scores.tolist(), labels.tolist(), strict=True))

    def top_images(
        self, found: JointFound, members: Sequence[JointMember], k: int
    ) -> list[tuple[float, str, int]] | None:
        """The best ``k`` visible images of one query's ``found`` rows as (score,
        image_id, member), or ``None`` when the rows hold fewer: hidden rows
        crowded a full fetch, or the lists held too few (a search then widens
        its scan). Rows are named in score order until ``k`` images are found
        (one faiss call a row): an image's first row is its best."""
        best: list[tuple[float, str, int]] = []
        if k <= 0:
            return best
        seen: set[str] = set()
        stack, nlist = self._stack, self.nlist
        for score, label in zip(*found, strict=True):
            if label < 0:  # the lists held fewer rows than asked for
                break
            list_no = label >> 32
            owner = members[list_no // nlist]
            row = stack.get_single_id(list_no, label & 0xFFFFFFFF)
            if not owner.visible[row]:
                continue
            image_id = owner.row_image[row]
            if image_id in seen:  # another row (a tile) of an image already ranked
                continue
            seen.add(image_id)
            best.append((score, image_id, list_no // nlist))
            if len(best) == k:
                return best
        return None

    def _search_params(self, nprobe: int) -> Any:
        params = self._params.get(nprobe)
        if params is None:
            params = self._params[nprobe] = faiss.SearchParametersIVF()
            params.nprobe = nprobe
        return params


def joint_fetch(k: int, members: Sequence[JointMember]) -> int:
    """Rows a joint scan asks for: enough for ``k`` images when each has its most
    rows (``k`` rows where images have one), and a margin for the hidden rows
    that may sit among the best: one row per hidden row in the shard, as many
    more at most (a shard with no hidden row fetches exactly the rows)."""
    rows = k * max(member.rows_per_image for member in members)
    hidden = sum(member.hidden_rows for member in members)
    return rows + min(rows, hidden)
