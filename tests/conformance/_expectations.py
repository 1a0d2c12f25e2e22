"""The expectations file: which test_asyncio tests do not pass on oxloop, and why.

One test a line; a line that starts with `#` is a comment:

    <test id> [py<versions>] <category>: <reason>

The test id is unittest's without the `test.test_asyncio.` prefix. The optional version marker
limits the line to some Python minor versions: `py3.12+`, `py-3.11` (3.11 and older),
`py3.10-3.11`, `py3.13`, or several joined by commas (`py3.10,3.12+`). A line without one holds
for every version. The first line that names a test and matches the running version wins.

Categories: `private` (the test reaches into asyncio's internals), `not-yet` (oxloop lacks the
feature today), `bug` (oxloop differs from asyncio on a public API: a defect to fix), `flaky`
(timing-dependent, may pass).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CATEGORIES = ("private", "not-yet", "bug", "design", "flaky")
_VERSION = re.compile(r"^(\d+)\.(\d+)$")


def _minor(text: str) -> tuple[int, int]:
    m = _VERSION.match(text)
    if m is None:
        raise ValueError(f"bad Python version {text!r}")
    return int(m.group(1)), int(m.group(2))


def version_matches(spec: str, version: tuple[int, int]) -> bool:
    """Does a marker like `3.12+`, `-3.11`, `3.10-3.11`, `3.13` or `3.10,3.12+` cover it?"""
    for item in spec.split(","):
        item = item.strip()
        if item.endswith("+"):
            ok = version >= _minor(item[:-1])
        elif item.startswith("-"):
            ok = version <= _minor(item[1:])
        elif "-" in item:
            low, high = item.split("-", 1)
            ok = _minor(low) <= version <= _minor(high)
        else:
            ok = version == _minor(item)
        if ok:
            return True
    return False


@dataclass(frozen=True)
class Expectation:
    test_id: str
    category: str
    reason: str
    versions: str | None
    line: int

    def text(self) -> str:
        return f"{self.category}: {self.reason}"


def parse(text: str, version: tuple[int, int]) -> dict[str, Expectation]:
    """The expectations that hold for `version`, by test id."""
    out: dict[str, Expectation] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 2:
            raise ValueError(f"expectations line {lineno}: no reason: {raw!r}")
        test_id, rest = parts[0], " ".join(parts[1:])
        versions = None
        if parts[1].startswith("py") and len(parts) == 3:
            versions, rest = parts[1][2:], parts[2]
            try:
                version_matches(versions, version)
            except ValueError as exc:
                raise ValueError(f"expectations line {lineno}: {exc}") from None
        category, sep, reason = rest.partition(":")
        category = category.strip()
        if not sep or category not in CATEGORIES:
            raise ValueError(
                f"expectations line {lineno}: expected '<category>: <reason>' with a category "
                f"in {', '.join(CATEGORIES)}, got {rest!r}"
            )
        if versions is not None and not version_matches(versions, version):
            continue
        if test_id not in out:
            out[test_id] = Expectation(test_id, category, reason.strip(), versions, lineno)
    return out
