"""The drop-reason vocabulary of the manifest's ``reason`` column: ``KIND[:TARGET][ | DETAIL]``.

``KIND`` is one word (``corrupt``, ``too_small``, ``exact_duplicate``, ``near_copy``, ...), ``TARGET`` the
id a duplicate points to (``exact_duplicate:<id>``, ``near_copy:<anchor id>``), ``DETAIL`` free text for
people. Every module that reads or writes reasons uses these functions.
"""

from __future__ import annotations

from typing import Any

EXACT_DUPLICATE = "exact_duplicate"
NEAR_COPY = "near_copy"
NEAR_DUPLICATE = "near_duplicate"
#: Prefixes of the reasons the near-duplicate stage writes; it (and ``inf30 merge``) re-makes exactly these.
DEDUPE_REASONS = (f"{NEAR_COPY}:", f"{NEAR_DUPLICATE}:")
DETAIL_SEP = " | "


def make_reason(kind: str, target: str | None = None, detail: str = "") -> str:
    """``make_reason("near_copy", "ab12", "phash d=3")`` -> ``'near_copy:ab12 | phash d=3'``."""
    head = f"{kind}:{target}" if target else kind
    return f"{head}{DETAIL_SEP}{detail}" if detail else head


def parse_reason(reason: Any) -> tuple[str, str | None, str]:
    """``'near_copy:ab12 | phash d=3'`` -> ``('near_copy', 'ab12', 'phash d=3')``; ``('', None, '')`` for no
    reason (None, NaN, an empty string)."""
    if not isinstance(reason, str) or not reason.strip():
        return "", None, ""
    head, _, detail = reason.partition(DETAIL_SEP)
    kind, _, target = head.partition(":")
    return kind.strip(), target.strip() or None, detail


def reason_kind(reason: Any) -> str:
    """The KIND of a reason (``'exact_duplicate:ab12 | x'`` -> ``'exact_duplicate'``); ``''`` for none."""
    return parse_reason(reason)[0]


def reason_target(reason: Any) -> str | None:
    """The TARGET of a reason (the id a duplicate points to), or None."""
    return parse_reason(reason)[1]


def is_dedupe_reason(reason: Any) -> bool:
    """Whether the near-duplicate stage wrote this reason (``near_copy:``/``near_duplicate:``)."""
    return isinstance(reason, str) and reason.startswith(DEDUPE_REASONS)
