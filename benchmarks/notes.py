"""The hand-written notes of a results file, carried over when a benchmark rewrites it
(throughput.py and gpu_throughput.py; standard library only)."""
from __future__ import annotations

from pathlib import Path


def kept_notes(path: str | None) -> list[str]:
    """The hand-written notes section ("## Notes ... by hand ...", up to the next "## " heading)
    of the report at `path` that --out is about to replace, marked as the earlier run's, so
    a rerun does not drop them; [] where there is none."""
    try:
        lines = Path(path).read_text().splitlines() if path else []
    except FileNotFoundError:
        return []
    start = next((i for i, l in enumerate(lines) if l.startswith("## Notes") and "by hand" in l),
                 None)
    if start is None:
        return []
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    kept = ("*Kept from the report this run replaced, written for that run's numbers: check "
            "that each still holds, then drop this line.*")
    body = [line for line in lines[start + 1:end] if line != kept]
    while body and not body[-1].strip():
        body.pop()
    while body and not body[0].strip():
        body.pop(0)
    return ["", lines[start], "", kept, "", *body]
