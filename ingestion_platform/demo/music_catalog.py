"""Deterministic fake streaming-music catalog behind the local music API.

The demo, the tests and the benchmark all need the *same* albums and tracks, and tests must be able
to compute the exact records a client should have landed without calling the server. So everything
here is derived from a seed: albums are generated eagerly (they are what gets paginated and
filtered), tracks lazily per album from a per-album seed (so a large benchmark catalog does not hold
millions of track dicts in memory).

Records are plain JSON-ready dicts, exactly the objects the server serves: tests can compare them
with what landed. Treat them as read-only.
"""

from __future__ import annotations

import bisect
import itertools
import random
from datetime import date, timedelta
from typing import Any

Record = dict[str, Any]

_ADJECTIVES = (
    "Neon", "Velvet", "Hollow", "Golden", "Electric", "Silent", "Broken", "Midnight", "Paper",
    "Crimson", "Static", "Lunar", "Wild", "Glass", "Northern", "Faded", "Copper", "Endless",
)  # fmt: skip
_NOUNS = (
    "Harbor", "Echoes", "Orchard", "Signals", "Rivers", "Machines", "Gardens", "Skyline", "Tides",
    "Frequencies", "Ghosts", "Highway", "Satellites", "Embers", "Letters", "Atlas", "Mirrors",
)  # fmt: skip
_GENRES = (
    "indie pop", "synthwave", "techno", "jazz", "hip hop", "folk", "ambient", "post-rock",
    "r&b", "drum and bass", "k-pop", "afrobeats", "metal", "bossa nova", "house", "soul",
)  # fmt: skip
_ARTIST_POOL_SIZE = 150
_FRIDAY = 4  # date.weekday(): most real-world releases land on Fridays


def _as_iso(value: date | str | None) -> str | None:
    return value.isoformat() if isinstance(value, date) else value


class Catalog:
    """Seeded albums sorted by ``(release_date, id)``, the order every endpoint pages in."""

    def __init__(
        self,
        seed: int = 7,
        albums: int = 600,
        first_release: date = date(2026, 1, 1),
        days: int = 60,
        tracks_per_album: tuple[int, int] = (3, 14),
    ) -> None:
        if albums < 0 or days < 1 or not 1 <= tracks_per_album[0] <= tracks_per_album[1]:
            raise ValueError("need albums >= 0, days >= 1 and 1 <= min tracks <= max tracks")
        self.seed = seed
        self.first_release = first_release
        self.days = days
        self.tracks_per_album = tracks_per_album
        rng = random.Random(seed)
        self._artists = [
            {"id": f"art-{i:04d}", "name": f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"}
            for i in range(_ARTIST_POOL_SIZE)
        ]
        # Fridays weigh more and each day is jittered, so days carry visibly different volumes.
        self._day_cum_weights = list(
            itertools.accumulate(
                (4.0 if (first_release + timedelta(d)).weekday() == _FRIDAY else 1.0)
                * rng.uniform(0.5, 1.5)
                for d in range(days)
            )
        )
        # Ids are assigned before dates, so id order is deliberately *not* release order: a client
        # that sorts or dedupes by the wrong key shows up in tests.
        generated = [self._make_album(rng, index) for index in range(albums)]
        self.albums: list[Record] = sorted(generated, key=lambda a: (a["release_date"], a["id"]))
        self._keys = [(a["release_date"], a["id"]) for a in self.albums]
        self._by_id = {a["id"]: a for a in self.albums}

    def _make_album(self, rng: random.Random, index: int) -> Record:
        day = rng.choices(range(self.days), cum_weights=self._day_cum_weights)[0]
        artists = rng.sample(self._artists, k=rng.choice((1, 1, 1, 2, 3)))
        return {
            "id": f"alb-{index:06d}",
            "name": f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}",
            "release_date": (self.first_release + timedelta(days=day)).isoformat(),
            "total_tracks": rng.randint(*self.tracks_per_album),
            "artists": [dict(artist) for artist in artists],
            "genres": rng.sample(_GENRES, k=rng.randint(1, 3)),
            "popularity": rng.randint(0, 100),
        }

    def album(self, album_id: str) -> Record | None:
        return self._by_id.get(album_id)

    def tracks_for(self, album_id: str) -> list[Record]:
        """One album's tracks, identical on every call; an unknown id raises KeyError."""
        album = self._by_id[album_id]
        # String seeds are hashed with SHA-512 by `random`, so this is stable across processes.
        rng = random.Random(f"{self.seed}:{album_id}")
        tracks = []
        for number in range(1, album["total_tracks"] + 1):
            artists = [dict(artist) for artist in album["artists"]]
            if rng.random() < 0.15:  # a featured guest, so track artists differ from album artists
                artists.append(dict(rng.choice(self._artists)))
            tracks.append(
                {
                    "id": f"trk-{album_id[4:]}-{number:02d}",
                    "name": f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}",
                    "track_number": number,
                    "duration_ms": rng.randint(90_000, 420_000),
                    "explicit": rng.random() < 0.2,
                    "artists": artists,
                }
            )
        return tracks

    def releases_between(
        self, after: date | str | None = None, before: date | str | None = None
    ) -> list[Record]:
        """Albums with ``after <= release_date < before`` (either bound optional), in page order."""
        start, stop = self._window(after, before)
        return self.albums[start:stop]

    def _window(self, after: date | str | None, before: date | str | None) -> tuple[int, int]:
        after_iso, before_iso = _as_iso(after), _as_iso(before)
        # ("YYYY-MM-DD", "") sorts before every album of that day, so both bounds land on day edges.
        start = bisect.bisect_left(self._keys, (after_iso, "")) if after_iso else 0
        stop = bisect.bisect_left(self._keys, (before_iso, "")) if before_iso else len(self._keys)
        return start, max(start, stop)

    def releases_after_key(
        self,
        key: tuple[str, str] | None,
        after: date | str | None = None,
        before: date | str | None = None,
    ) -> list[Record]:
        """Keyset view for cursor pagination: albums in the window strictly after ``key``."""
        start, stop = self._window(after, before)
        if key is not None:
            start = max(start, bisect.bisect_right(self._keys, tuple(key)))
        return self.albums[start:stop]
