"""API failures phrased for the person who declared the source: which source, what, the fix."""

from __future__ import annotations

import requests

from ingestion_platform.core.declaration import SourceContext
from ingestion_platform.sources.api.connectors.rest_api import ApiError, connection_failure


class ApiSourceError(RuntimeError):
    """An API source's run failed; the message says where and never carries a secret."""


def readable(error: BaseException, source: SourceContext) -> BaseException:
    """The most specific cause in the chain (dlt wraps it in pipeline-step errors)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ApiError):
            return _error(source, str(seen), seen.fix)
        if isinstance(seen, requests.HTTPError) and seen.response is not None:
            response = seen.response
            path = response.url.split("?", 1)[0]
            return _error(
                source,
                f"{path} answered HTTP {response.status_code} {response.reason}",
                "check auth, base_url and the resource's endpoint.path",
            )
        if isinstance(seen, requests.ConnectionError | requests.Timeout):
            # Only a request made outside the budgeted session gets here (it retries the rest).
            url = seen.request.url.split("?", 1)[0] if seen.request is not None else "the API"
            return _error(
                source,
                f"{url} could not be reached ({connection_failure(seen)})",
                "check that the API answers at base_url",
            )
        seen = seen.__cause__ or seen.__context__
    return error


def _error(source: SourceContext, problem: str, fix: str) -> ApiSourceError:
    return ApiSourceError(f"source {source.name!r} ({source.defs_file}): {problem}. Fix: {fix}.")
