"""A run's user labels (tags and a note): the ``PATCH /api/runs/{id}`` body and its rules."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator

MAX_TAGS = 16
MAX_TAG_LENGTH = 40
MAX_NOTE_LENGTH = 2000
#: Letters, digits and ``_ . : / = + -``: a tag must survive a URL, a filter box and a shell unquoted.
TAG_PATTERN = re.compile(r"[A-Za-z0-9_.:/=+-]+")


class RunLabels(BaseModel):
    """Replace the run's tags and/or its note; a field left out is kept."""

    model_config = ConfigDict(extra="forbid")

    tags: list[StrictStr] | None = Field(
        default=None,
        max_length=MAX_TAGS,
        description=f"at most {MAX_TAGS} distinct tags, each 1-{MAX_TAG_LENGTH} of letters, digits and _ . : / = + -",
    )
    note: StrictStr | None = Field(default=None, max_length=MAX_NOTE_LENGTH, description="free text")

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str] | None) -> list[str] | None:
        if tags is None:
            return None
        for tag in tags:
            if not 1 <= len(tag) <= MAX_TAG_LENGTH or not TAG_PATTERN.fullmatch(tag):
                raise ValueError(
                    f"tag {tag!r} is not 1-{MAX_TAG_LENGTH} of letters, digits and _ . : / = + - "
                    "(no spaces: use e.g. 'lr=3e-4' or 'baseline')"
                )
        dupes = sorted({t for t in tags if tags.count(t) > 1})
        if dupes:
            raise ValueError(f"tags {dupes} appear more than once; list each tag once")
        return tags

    @model_validator(mode="after")
    def _something(self) -> RunLabels:
        if self.tags is None and self.note is None:
            raise ValueError("nothing to change: send 'tags' (a list of strings) and/or 'note' (a string)")
        return self

    def changes(self) -> dict[str, list[str] | str]:
        """The run fields to store (the ones sent)."""
        out: dict[str, list[str] | str] = {}
        if self.tags is not None:
            out["tags"] = self.tags
        if self.note is not None:
            out["note"] = self.note
        return out
