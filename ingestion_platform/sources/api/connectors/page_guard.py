"""A paginator wrapper that stops a walk through an API's pages where dlt would go on silently.

- **Loops.** dlt follows a paginator until it says there is no next page. An API whose last
  page links to itself, or whose cursor leads back to an earlier page, would be read forever:
  the run never ends, lands nothing and holds the warehouse pool's slot, so every other
  landing waits behind it. A page that answers the same request with the same bytes as an
  earlier page of the same walk is such a loop, and the walk stops there. The same request
  answered with new content (a scroll cursor that stays the same) is not a loop.
- **A data selector that misses the records.** dlt turns a `data_selector` that matches
  nothing into an empty page with a warning only in its own log, so a typo in it lands
  nothing and the run succeeds. A page whose selector matches nothing while the page holds a
  list of records elsewhere fails the walk, naming where the records are. A page with no
  records at all (an empty window whose API leaves the list out) is not an error.
"""

from __future__ import annotations

import hashlib
from typing import Any

from dlt.common.jsonpath import TJsonPath, find_values
from dlt.sources.helpers.rest_client.detector import PaginatorFactory, find_response_page_data
from dlt.sources.helpers.rest_client.exceptions import PaginatorNotFound
from dlt.sources.helpers.rest_client.paginators import BasePaginator
from requests import Request, Response

from ingestion_platform.sources.api.connectors.rest_api import ApiError


class PageGuard(BasePaginator):
    """`inner` (dlt's paginator; None to detect one from the first page, as dlt does), failing
    the walk of resource `resource` when a page repeats an earlier one or its `selector`
    misses the page's records."""

    def __init__(
        self, inner: BasePaginator | None, resource: str, selector: TJsonPath | None = None
    ) -> None:
        super().__init__()
        self.inner = inner
        self.resource = resource
        self.selector = selector
        self._detects = inner is None
        self._seen: dict[tuple[str, str, bytes, bytes], int] = {}

    def init_request(self, request: Request) -> None:
        # dlt reuses one paginator for every walk of a resource (each parent's child pages).
        self._seen.clear()
        if self._detects:
            self.inner = None
        if self.inner is not None:
            self.inner.init_request(request)

    def update_state(self, response: Response, data: list[Any] | None = None) -> None:
        page = len(self._seen) + 1
        sent = response.request
        key = (
            sent.method or "",
            sent.url or "",
            _digest(sent.body),
            _digest(response.content),
        )
        path = (sent.url or "").split("?", 1)[0]  # the query may carry an API key
        if key in self._seen:
            raise ApiError(
                f"{path}: page {page} of this walk is page {self._seen[key]} again (the same "
                "request answered with the same content), so its pagination would go round "
                "forever; nothing was landed",
                "check the resource's paginator: the next link or cursor it follows must "
                "change from page to page and be empty on the last page. If it does, the API "
                "repeats a page, and only its owner can fix that",
            )
        self._seen[key] = page
        if not data and self.selector is not None:
            self._check_selector(path, response)
        if self.inner is None:
            detected, _score = PaginatorFactory().create_paginator(response)
            if detected is None:
                raise PaginatorNotFound(
                    f"No suitable `paginator` found for the response at `{response.url}`"
                )
            self.inner = detected
        self.inner.update_state(response, data)

    @property
    def has_next_page(self) -> bool:
        return self.inner.has_next_page if self.inner is not None else True

    def _check_selector(self, path: str, response: Response) -> None:
        """Fail if the selector matched nothing where the page holds records."""
        document = response.json()
        if any(value is not None for value in find_values(self.selector, document)):
            return  # an empty list, or one record: dlt's to land
        where, records = find_response_page_data(document)
        if not isinstance(records, list) or not records or where == ("$",):
            return  # no records anywhere: an empty page
        found = ".".join(where)
        raise ApiError(
            f"{path}: resource {self.resource!r}: data_selector {str(self.selector)!r} "
            f"matches nothing in the page, which holds {len(records)} records at {found!r}; "
            "nothing was landed",
            f"set the resource's endpoint.data_selector to {found!r} (the path to its records)",
        )

    def update_request(self, request: Request) -> None:
        assert self.inner is not None, "update_state comes first"
        self.inner.update_request(request)

    def __str__(self) -> str:
        return f"{self.inner} (stopped if a page repeats)"


def _digest(content: bytes | str | None) -> bytes:
    if content is None:
        return b""
    raw = content.encode() if isinstance(content, str) else content
    return hashlib.blake2b(raw, digest_size=16).digest()
