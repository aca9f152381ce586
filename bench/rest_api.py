"""Benchmark: the `RestApiSource` component against the local music API, limited and unlimited.

What is measured
----------------
The platform variant materialises the demo declaration (`ingestion_platform/demo/defs/music/
defs.yaml`: `new_releases` paged 50 a page by `next` links, then one `album_tracks` request
per album; OAuth2 client credentials), only its `limits.requests_per_second` changed per
variant, as one daily partition with `dg.materialize` in this process, on a SQLite-backed
`dg.instance_for_test()` instance, into a fresh DuckDB file per run.

The API is `python -m ingestion_platform.demo.music_api --port P --albums 9000 --seed 7` in
its own process (a free loopback port), so it never shares the GIL with the client. Limits
are switched with `POST /_admin/config`, counters zeroed with `POST /_admin/reset` before
every run, and read back from `GET /_admin/stats` after it. A day of A albums costs
N = ceil(A / 50) + A requests (pages; an album has at most 14 tracks, one page); the script
picks the days from the catalog, which it rebuilds locally from the same seed, and checks N
against the server's count.

(a) limited   server limit R req/s, burst B = ceil(R) (default 10 and 10), platform budget
              `requests_per_second: R` (its burst defaults to R as well); the day whose N is
              closest to `--limited-pages` (default 120). Reported: wall time of
              `dg.materialize` against two ideals, N / R (the issue's) and (N - B) / R (the
              first B requests may go at once; B requests per B / R s after that), plus
              the HTTP span (server-side first to last arrival) against (N - B) / R. Target
              (`target met`): wall <= 1.1 x N/R, the stricter ideal, and zero failed
              requests (`over_limit == 0`, `served_429 == 0`, `served_5xx == 0`, every /v1
              response a 200, so `requests` == N).
(b) unlimited no server limit, no platform budget. `plain` is one `requests.Session`: a token
              from `/api/token`, then the same endpoints with the same params (`limit=50`,
              `released_after` / `released_before`), following the same `next` links and
              parsing every page with `.json()`; it counts records and lands nothing. The
              platform runs the busiest day of the catalog (`big`) and the quietest (`small`).
              Pages/s of the platform are given three ways:
                incl. overhead   N_big / wall(big)
                marginal         (N_big - N_small) / (wall(big) - wall(small)): fixed
                                 per-run cost (Dagster run, dlt pipeline set-up, DuckDB
                                 load of a new schema) cancels out
                extract only     N_big / time in dlt's `Pipeline.extract` (all HTTP, paging
                                 and dlt's per-record extract work, no normalise or load)
                HTTP span only   N_big / (last - first /v1 arrival at the server)
              each also divided by plain's pages/s (plain's time includes its token request
              and session set-up: a few ms).

How
---
* Wall times are `time.monotonic()` around the `dg.materialize` call (or the plain loop);
  definitions are built, and the DuckDB file path chosen, before the clock starts. One
  untimed warm-up run of the platform comes first (imports, first-run caches).
* dlt's `Pipeline.extract/normalize/load` are wrapped (in this process only) to time them
  (wall and CPU).
* Server arrival stamps are the server's `time.monotonic()`; on Linux that is the same
  system-wide CLOCK_MONOTONIC as ours, so "before first request" (materialise start to the
  first /v1 arrival) and "after last request" (last arrival to materialise end) are derived.
* Every run is verified, else the script stops: the run succeeded; the fresh DuckDB file
  holds exactly the catalog's albums of that day in `music.new_releases` and exactly their
  tracks in `music.album_tracks` (counts and distinct ids, all with `_batch_key` = the day);
  the server served exactly N pages. In (b) any failed request stops the script too; in
  (a) failed requests (a 429 and its retry) are what is measured, so they are reported and
  fail the target, not the script. The plain loop's record counts are checked likewise.
* `cpu s` is `time.process_time()` of this process (all its threads) around the same span;
  the API's own CPU is not in it. On a shared machine it moves less than wall time, so (b)
  also prints client CPU per page: plain, platform extract only, platform whole run
  (marginal: (cpu_big - cpu_small) / (N_big - N_small)).
* Runs alternate for `--rounds` rounds (default 2); (a) reports every run, (b) the best.
* Dagster's console logger is set to WARNING (the event log still records every event).
  `RUNTIME__DLTHUB_TELEMETRY=false`.
* `--profile FILE` skips the benchmark and runs the `big` day once, unlimited, under cProfile
  (written to FILE; top functions printed).

Run `.venv/bin/python bench/rest_api.py --help` for the flags; see bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import json
import math
import os
import pstats
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"

REPO = Path(__file__).resolve().parent.parent
DEFS_YAML = REPO / "ingestion_platform" / "demo" / "defs" / "music" / "defs.yaml"
SOURCE = "music"  # folder name = source name = DuckDB schema
PAGE_SIZE = 50  # the demo declaration's page_size, the API's maximum
CLIENT_ID, CLIENT_SECRET = "demo-client", "demo-secret"
DLT_STEPS = ("extract", "normalize", "load")
ROUTES = ("/v1/browse/new-releases", "/v1/albums/{id}/tracks")


# --------------------------------------------------------------------------- the API process


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ApiProcess:
    """The demo music API in a child process, driven through its /_admin endpoints."""

    def __init__(self, albums: int, seed: int, log: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "ingestion_platform.demo.music_api", "--port", str(port)]
        cmd += ["--albums", str(albums), "--seed", str(seed)]
        env = {**os.environ, "MUSIC_API_CLIENT_ID": CLIENT_ID}
        env["MUSIC_API_CLIENT_SECRET"] = CLIENT_SECRET
        self._log = log.open("w")
        self.process = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.stats()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"the music API did not start; see {log}") from None
                time.sleep(0.1)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_admin/stats")

    def reset(self) -> None:
        self._call("POST", "/_admin/reset")

    def configure(self, **changes: Any) -> None:
        self._call("POST", "/_admin/config", changes)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


# --------------------------------------------------------------------------- the catalog


class Day:
    """One daily partition: what the catalog says should land and how many requests it costs."""

    def __init__(self, catalog: Any, day: str) -> None:
        self.key = day
        self.next = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
        albums = catalog.releases_between(day, self.next)
        self.album_ids = {album["id"] for album in albums}
        self.tracks = sum(album["total_tracks"] for album in albums)
        # One new-releases page per 50 albums, then each album's tracks, 50 a page.
        track_pages = sum(math.ceil(album["total_tracks"] / PAGE_SIZE) for album in albums)
        self.pages = math.ceil(len(albums) / PAGE_SIZE) + track_pages

    @property
    def albums(self) -> int:
        return len(self.album_ids)


def pick_days(catalog: Any, limited_pages: int) -> tuple[Day, Day, Day]:
    """(limited: N closest to `limited_pages`, big: most pages, small: fewest but non-empty)."""
    days = sorted({album["release_date"] for album in catalog.albums})
    candidates = [Day(catalog, day) for day in days]
    limited = min(candidates, key=lambda d: (abs(d.pages - limited_pages), d.key))
    big = max(candidates, key=lambda d: (d.pages, d.key))
    small = min(candidates, key=lambda d: (d.pages, d.key))
    return limited, big, small


# --------------------------------------------------------------------------- the platform


def time_dlt_steps(phases: dict[str, float]) -> None:
    """Accumulate wall and CPU time of every dlt `Pipeline.extract/normalize/load` call."""
    from dlt.pipeline.pipeline import Pipeline

    for name in DLT_STEPS:
        original = getattr(Pipeline, name)

        @functools.wraps(original)
        def timed(self: Any, *args: Any, _original: Any = original, _name: str = name, **kw: Any):
            started, cpu_started = time.monotonic(), time.process_time()
            try:
                return _original(self, *args, **kw)
            finally:
                phases[_name] = phases.get(_name, 0.0) + time.monotonic() - started
                cpu = time.process_time() - cpu_started
                phases[f"{_name}_cpu"] = phases.get(f"{_name}_cpu", 0.0) + cpu

        setattr(Pipeline, name, timed)


def platform_assets(workdir: Path, requests_per_second: int | None) -> list[Any]:
    """The demo declaration's assets, built in `workdir/music`, with the given budget."""
    import yaml
    from dagster.components.core.component_tree import ComponentTree

    from ingestion_platform.sources.api.component import RestApiSource

    attributes = yaml.safe_load(DEFS_YAML.read_text())["attributes"]
    limits = dict(attributes["limits"])
    limits.pop("requests_per_second", None)
    if requests_per_second is not None:
        limits["requests_per_second"] = requests_per_second
    attributes["limits"] = limits
    folder = workdir / f"defs-{requests_per_second or 'unlimited'}" / SOURCE
    folder.mkdir(parents=True, exist_ok=True)
    document = {"type": f"{RestApiSource.__module__}.{RestApiSource.__name__}"}
    (folder / "defs.yaml").write_text(yaml.safe_dump({**document, "attributes": attributes}))
    component = RestApiSource.resolve_from_yaml(yaml.safe_dump(attributes))
    defs = component.build_defs(ComponentTree.for_test().load_context.for_path(folder))
    return list(defs.assets or [])


def verify_landed(path: Path, day: Day) -> None:
    import duckdb

    connection = duckdb.connect(str(path), read_only=True)
    try:
        for table, expected in (("new_releases", day.albums), ("album_tracks", day.tracks)):
            rows, ids, in_day = connection.execute(
                f"select count(*), count(distinct id), count(*) filter (where _batch_key = ?) "  # noqa: S608
                f"from {SOURCE}.{table}",
                [day.key],
            ).fetchone()
            if not rows == ids == in_day == expected:
                raise SystemExit(
                    f"{path}: {table} of {day.key} holds {rows} rows ({ids} distinct ids, "
                    f"{in_day} in the day), the catalog says {expected}"
                )
        ids_sql = f"select id from {SOURCE}.new_releases"  # noqa: S608
        landed = {row[0] for row in connection.execute(ids_sql).fetchall()}
        if landed != day.album_ids:
            raise SystemExit(f"{path}: new_releases ids differ from the catalog's for {day.key}")
    finally:
        connection.close()


def server_check(
    stats: dict[str, Any], day: Day, label: str, allow_failed: bool = False
) -> dict[str, Any]:
    """The server's view of one run; stops the benchmark on a missing page, or on any failed
    request unless `allow_failed` (then failures are reported, not fatal)."""
    requests_made = sum(stats["by_path"].get(route, 0) for route in ROUTES)
    statuses = stats["status_counts"]
    pages = statuses.get("200", 0) - stats["tokens_issued"]  # /v1 pages served
    failed = requests_made - pages
    problems = []
    if pages != day.pages:
        problems.append(f"{pages} pages served, expected {day.pages}")
    if failed and not allow_failed:
        problems.append(
            f"failed requests: over_limit={stats['over_limit']}, "
            f"served_429={stats['served_429']}, served_5xx={stats['served_5xx']}, {statuses}"
        )
    if problems:
        raise SystemExit(f"{label} on {day.key}: " + "; ".join(problems))
    arrivals = stats["arrivals"]
    return {
        "pages": pages,
        "requests": requests_made,
        "first_arrival": arrivals[0],
        "last_arrival": arrivals[-1],
        "max_in_1s": stats["max_arrivals_in_any_1s"],
        "over_limit": stats["over_limit"],
        "served_429": stats["served_429"],
        "served_5xx": stats["served_5xx"],
        "failed": failed,
    }


def run_platform(
    assets: list[Any],
    day: Day,
    api: ApiProcess,
    instance: Any,
    workdir: Path,
    phases: dict[str, float],
    label: str,
    allow_failed: bool = False,
) -> dict[str, Any]:
    import dagster as dg

    from ingestion_platform.core.warehouse import WarehouseResource
    from ingestion_platform.slot_guard import freeze_start_up_heap

    duckdb_path = workdir / f"{label}-{time.monotonic_ns()}.duckdb"
    resources = {"warehouse": WarehouseResource(path=str(duckdb_path))}
    run_config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    api.reset()
    phases.clear()
    freeze_start_up_heap()  # as every run's process does (slot_guard.py)
    started, cpu_started = time.monotonic(), time.process_time()
    result = dg.materialize(
        assets,
        partition_key=day.key,
        resources=resources,
        instance=instance,
        run_config=run_config,
        raise_on_error=False,
    )
    ended, cpu = time.monotonic(), time.process_time() - cpu_started
    if not result.success:
        raise SystemExit(f"{label}: dg.materialize of {day.key} failed")
    server = server_check(api.stats(), day, label, allow_failed)
    verify_landed(duckdb_path, day)
    return {
        "label": label,
        "day": day.key,
        "wall": ended - started,
        "cpu": cpu,
        "before_first": server["first_arrival"] - started,
        "http_span": server["last_arrival"] - server["first_arrival"],
        "after_last": ended - server["last_arrival"],
        **{step: phases.get(step, 0.0) for step in DLT_STEPS},
        **{f"{step}_cpu": phases.get(f"{step}_cpu", 0.0) for step in DLT_STEPS},
        **server,
    }


# --------------------------------------------------------------------------- the plain loop


def run_plain(api: ApiProcess, day: Day) -> dict[str, Any]:
    import requests

    api.reset()
    started, cpu_started = time.monotonic(), time.process_time()
    albums = tracks = 0
    with requests.Session() as session:
        token = session.post(
            f"{api.url}/api/token",
            data={"grant_type": "client_credentials"},
            auth=(CLIENT_ID, CLIENT_SECRET),
            timeout=60,
        )
        token.raise_for_status()
        session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        url: str | None = f"{api.url}/v1/browse/new-releases"
        params: dict[str, Any] | None = {
            "released_after": day.key,
            "released_before": day.next,
            "limit": PAGE_SIZE,
        }
        while url:
            response = session.get(url, params=params, timeout=60)
            response.raise_for_status()
            page = response.json()["albums"]
            albums += len(page["items"])
            for album in page["items"]:
                track_url: str | None = f"{api.url}/v1/albums/{album['id']}/tracks"
                track_params: dict[str, Any] | None = {"limit": PAGE_SIZE}
                while track_url:
                    response = session.get(track_url, params=track_params, timeout=60)
                    response.raise_for_status()
                    track_page = response.json()
                    tracks += len(track_page["items"])
                    track_url, track_params = track_page["next"], None
            url, params = page["next"], None
    ended, cpu = time.monotonic(), time.process_time() - cpu_started
    if (albums, tracks) != (day.albums, day.tracks):
        raise SystemExit(
            f"plain loop on {day.key}: {albums} albums and {tracks} tracks, "
            f"the catalog says {day.albums} and {day.tracks}"
        )
    server = server_check(api.stats(), day, "plain")
    return {"label": "plain", "day": day.key, "wall": ended - started, "cpu": cpu, **server}


# --------------------------------------------------------------------------- report


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)))


def _cell(run: dict[str, Any], key: str, digits: int = 2) -> str:
    return f"{run[key]:.{digits}f}" if key in run else "-"


def report_limited(runs: list[dict[str, Any]], rate: int, burst: int) -> bool:
    """Print (a); True if every run met wall <= 1.1 x N/R with no failed request."""
    ok = True
    rows = []
    for run in runs:
        n = run["pages"]
        ideal, ideal_burst = n / rate, (n - burst) / rate
        met = run["wall"] <= 1.1 * ideal and run["failed"] == 0
        ok = ok and met
        rows.append(
            [
                run["day"],
                str(n),
                _cell(run, "wall"),
                f"{ideal:.2f}",
                f"{run['wall'] / ideal:.3f}",
                f"{ideal_burst:.2f}",
                f"{run['wall'] / ideal_burst:.3f}",
                _cell(run, "http_span"),
                f"{run['http_span'] / ideal_burst:.3f}",
                _cell(run, "before_first"),
                _cell(run, "after_last"),
                _cell(run, "normalize"),
                _cell(run, "load"),
                _cell(run, "cpu"),
                str(run["max_in_1s"]),
                f"{run['over_limit']}/{run['served_429']}/{run['served_5xx']}",
                str(run["requests"]),
                "yes" if met else "NO",
            ]
        )
    header = ["day", "N", "wall s", "N/R s", "wall/(N/R)", "(N-B)/R s", "wall/((N-B)/R)"]
    header += ["http span s", "span/((N-B)/R)", "before 1st s", "after last s", "normalize s"]
    header += ["load s", "cpu s", "max in 1s", "over/429/5xx", "requests", "target met"]
    title = f"(a) limited: server {rate:g} req/s burst {burst}, platform budget {rate:g} req/s"
    print_table(title, header, rows)
    return ok


def report_unlimited(plain: dict[str, Any], big: dict[str, Any], small: dict[str, Any]) -> None:
    rows = [
        [
            run["label"],
            run["day"],
            str(run["pages"]),
            _cell(run, "wall", 3),
            f"{run['pages'] / run['wall']:.0f}",
            _cell(run, "extract", 3),
            _cell(run, "extract_cpu", 3),
            _cell(run, "normalize", 3),
            _cell(run, "load", 3),
            _cell(run, "http_span", 3),
            _cell(run, "before_first", 3),
            _cell(run, "after_last", 3),
            _cell(run, "cpu", 3),
        ]
        for run in (plain, big, small)
    ]
    header = ["variant", "day", "N", "wall s", "pages/s", "extract s", "extract cpu s"]
    header += ["normalize s", "load s", "http span s", "before 1st s", "after last s", "cpu s"]
    print_table("(b) unlimited: best (lowest wall) run of each", header, rows)
    plain_rate = plain["pages"] / plain["wall"]
    extra = big["pages"] - small["pages"]
    marginal = extra / (big["wall"] - small["wall"])
    fixed = small["wall"] - small["pages"] / marginal
    rates = {
        "incl. overhead   N_big / wall_big": big["pages"] / big["wall"],
        "marginal         (N_big - N_small) / (wall_big - wall_small)": marginal,
        "extract only     N_big / extract_big": big["pages"] / big["extract"],
        "HTTP span only   N_big / span_big": big["pages"] / big["http_span"],
    }
    print(f"\nplain requests loop: {plain_rate:.0f} pages/s")
    print(f"platform fixed per-run cost (intercept of small and big): {fixed:.2f} s")
    for name, rate in rates.items():
        print(f"platform {name}: {rate:.0f} pages/s = {rate / plain_rate:.2f} x plain")
    plain_cpu = plain["cpu"] / plain["pages"] * 1000
    cpus = {
        "whole run, marginal": (big["cpu"] - small["cpu"]) / extra * 1000,
        "extract only": big["extract_cpu"] / big["pages"] * 1000,
    }
    print(f"client CPU per page: plain {plain_cpu:.2f} ms", end="")
    for name, cpu in cpus.items():
        print(f"; platform {name} {cpu:.2f} ms ({cpu / plain_cpu:.1f} x)", end="")
    print()


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--albums", type=int, default=9000, help="catalog size (60 days)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=int, default=10, help="(a) limit, req/s (= burst)")
    parser.add_argument("--limited-pages", type=int, default=120, help="(a) target N")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--profile", metavar="FILE", help="only profile one unlimited big run")
    return parser.parse_args()


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-rest-api-"))
    try:
        yield workdir
    finally:
        if keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    args = parse_args()
    import dagster as dg

    from ingestion_platform.demo.music_catalog import Catalog

    catalog = Catalog(seed=args.seed, albums=args.albums)
    limited_day, big_day, small_day = pick_days(catalog, args.limited_pages)
    burst = math.ceil(args.rate)
    started = time.monotonic()
    with workspace(args.keep) as workdir:
        api = ApiProcess(args.albums, args.seed, workdir / "music_api.log")
        try:
            os.environ.update(
                MUSIC_API_URL=api.url,
                MUSIC_API_CLIENT_ID=CLIENT_ID,
                MUSIC_API_CLIENT_SECRET=CLIENT_SECRET,
            )
            print(f"music API {api.url}, catalog seed {args.seed}, {args.albums} albums")
            for name, day in (("(a)", limited_day), ("(b) big", big_day), ("(b) small", small_day)):
                print(
                    f"  {name}: {day.key}, {day.albums} albums, {day.tracks} tracks, "
                    f"N = {day.pages} requests"
                )
            phases: dict[str, float] = {}
            time_dlt_steps(phases)
            unlimited = platform_assets(workdir, None)
            limited = platform_assets(workdir, args.rate)
            with dg.instance_for_test() as instance:
                run = functools.partial(
                    run_platform, api=api, instance=instance, workdir=workdir, phases=phases
                )
                api.configure(rate_limit_per_second=None)
                run(unlimited, small_day, label="warm-up")
                if args.profile:
                    profile(run, unlimited, big_day, args.profile)
                    return
                limited_runs, plains, bigs, smalls = [], [], [], []
                for _ in range(args.rounds):
                    api.configure(rate_limit_per_second=args.rate, rate_limit_burst=burst)
                    limited_runs.append(
                        run(limited, limited_day, label="limited", allow_failed=True)
                    )
                    api.configure(rate_limit_per_second=None, rate_limit_burst=None)
                    plains.append(run_plain(api, big_day))
                    bigs.append(run(unlimited, big_day, label="big"))
                    smalls.append(run(unlimited, small_day, label="small"))
        finally:
            api.stop()

    def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
        return min(runs, key=lambda r: r["wall"])

    met = report_limited(limited_runs, args.rate, burst)
    report_unlimited(best(plains), best(bigs), best(smalls))
    verdict = "met in every run" if met else "NOT met in at least one run"
    print(f"\n(a) target (wall <= 1.1 x N/R and no failed request): {verdict}")
    print(f"total benchmark time {time.monotonic() - started:.0f} s")


def profile(run: Any, assets: list[Any], day: Day, out: str) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    result = run(assets, day, label="profile")
    profiler.disable()
    profiler.dump_stats(out)
    print(f"profiled {result['pages']} pages in {result['wall']:.2f} s -> {out}")
    stats = pstats.Stats(profiler).strip_dirs()
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
