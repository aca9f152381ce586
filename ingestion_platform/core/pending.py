"""What a size sensor asks every source: how much is waiting, and where a full batch ends."""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Pending:
    """`rows` waiting past the high-water mark (counted up to the threshold at most), the
    cursor value where a batch of the threshold ends (None while fewer are waiting), and the
    newest cursor value seen (where a batch cut by `max_wait` ends)."""

    rows: int
    full_batch_end: Any | None
    newest: Any | None
