"""A search filter from HTTP form fields, and tags from an upload form.

Lists travel as comma-separated text (``tags_any=shoes,red``): multipart forms
carry one string per field, and a tag never contains a comma (the event
schema refuses one), so the split is unambiguous. A bad filter is a
:class:`~index.filters.FilterError` the API answers with 422 ``bad_filter``.
"""

from __future__ import annotations

from index.filters import FilterError, SearchFilter
from streams.schemas import SchemaError, check_tags


def split_list(text: str | None) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; empty items (a trailing comma) are dropped."""
    if not text:
        return []
    return [item.strip() for item in text.split(",") if item.strip()]


def filter_from_form(
    owner_ids: str | None,
    tags_any: str | None,
    tags_all: str | None,
    uploaded_after: float | None,
    uploaded_before: float | None,
) -> SearchFilter | None:
    """The filter the fields ask for; ``None`` when none is set."""
    where = SearchFilter.of(
        split_list(owner_ids),
        split_list(tags_any),
        split_list(tags_all),
        uploaded_after,
        uploaded_before,
    )
    return None if where.empty else where


def tags_from_form(text: str | None) -> list[str]:
    """An upload form's comma-separated tags, checked (:func:`checked_tags`)."""
    return checked_tags(split_list(text))


def checked_tags(tags: list[str]) -> list[str]:
    """``tags`` once each, in order; :class:`FilterError` when they break the event
    schema's limits (count, length, a comma)."""
    unique = list(dict.fromkeys(tags))
    try:
        check_tags(unique)
    except SchemaError as exc:
        raise FilterError(exc.message) from exc
    return unique
