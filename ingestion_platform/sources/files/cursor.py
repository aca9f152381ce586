"""What a files sensor remembers between ticks: files still settling, and a partial batch's wait."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Files settling at once; past this the oldest observations are dropped (they settle again).
MAX_SETTLING = 2000


@dataclass
class SensorCursor:
    """Files seen but not yet stable (size, mtime, first seen so), and a partial batch's wait."""

    settling: dict[str, list[float]] = field(default_factory=dict)
    waiting_since: float | None = None
    refused: list[str] = field(default_factory=list)  # names already warned about
    # Object stores list in key order: the key every earlier one of which was handled, and
    # when the whole prefix was last listed (which finds objects written late under an
    # earlier key, and overwrites).
    start_after: str | None = None
    full_listing_at: float | None = None

    @classmethod
    def parse(cls, text: str | None) -> SensorCursor:
        data = json.loads(text or "{}")
        return cls(
            data.get("settling", {}),
            data.get("waiting_since"),
            data.get("refused", []),
            data.get("start_after"),
            data.get("full_listing_at"),
        )

    def dump(self) -> str:
        newest = sorted(self.settling.items(), key=lambda item: item[1][2])[-MAX_SETTLING:]
        state: dict[str, Any] = {"settling": dict(newest), "waiting_since": self.waiting_since}
        if self.refused:
            state["refused"] = self.refused
        if self.full_listing_at is not None:
            state["start_after"] = self.start_after
            state["full_listing_at"] = self.full_listing_at
        return json.dumps(state)
