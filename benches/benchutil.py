"""Helpers shared by the benchmark scripts (they run as scripts, so this sits beside them)."""

from __future__ import annotations

import asyncio


def oxloop_without_stats() -> asyncio.AbstractEventLoop:
    """The loop of the `oxloop-nostats` columns: oxloop with its statistics off, to measure
    what they cost."""
    import oxloop

    loop = oxloop.new_event_loop()
    loop.stats_enabled = False
    return loop


def print_markdown(header: list[str], rows: list[list[str]], labels: int = 1) -> None:
    """A markdown table: the first `labels` columns left-aligned, the numbers right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    aligns = ["<"] * labels + [">"] * (len(header) - labels)

    def line(cols: list[str]) -> str:
        cells = (f"{c:{a}{w}}" for c, a, w in zip(cols, aligns, widths, strict=True))
        return "| " + " | ".join(cells) + " |"

    print(line(header))
    rules = (
        "-" * w if a == "<" else "-" * (w - 1) + ":" for a, w in zip(aligns, widths, strict=True)
    )
    print("| " + " | ".join(rules) + " |")
    for row in rows:
        print(line(row))


def settle_malloc() -> None:
    """Frees a 1 MiB block, as a long-running process has usually done by the time it works.

    asyncio's transports read with ``recv(256 KiB)`` / ``os.read(256 KiB)`` and shrink the
    result to what arrived. In a fresh process that buffer is above glibc's initial mmap
    threshold (128 KiB), so every read costs an mmap, an mremap and a munmap -- until a block
    that large is freed, which raises the threshold for the rest of the process's life. Whether
    a process's start-up happened to free one then decides its CPU per message more than its
    event loop does (it made asyncio's protocol echo about three times as expensive here).
    Freeing one block first puts every process in the same, usual state.
    """
    block = bytes(1 << 20)
    del block
