"""Objects under an S3 prefix as a file transport: the S3 file source and Glue jobs' output.

Objects are listed in key order (ListObjectsV2), or with ListObjectVersions in a bucket
that keeps versions, so every listed object carries its version id and a replay can read
that exact version after it was overwritten. A listing can start after a key (`StartAfter`),
which keeps the sensor's cursor one key long. An object's identity is its ETag and size;
its LastModified is the mtime that time batches and the oldest-first order use.

An object name (its key below the prefix) decides where the file is staged, so a key that
could leave the staging folder (`..`, `//`, a NUL) is refused like a remote file name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from ingestion_platform.sources.files.connectors.entries import (
    ChangedDuringTransfer,
    FileEntry,
    Listing,
    ProgressFn,
    check_name,
    unsafe_reason,
)
from ingestion_platform.sources.files.connectors.s3_download import ObjectChanged, download_object

# CopyObject takes at most 5 GB; bigger objects are archived with the managed multipart copy.
_COPY_OBJECT_LIMIT = 5 * 1024**3


def s3_client(region: str | None, endpoint_url: str | None, profile: str | None = None) -> Any:
    """A boto3 S3 client from the standard credential chain, built by dagster-aws."""
    from dagster_aws.s3 import S3Resource

    resource = S3Resource(
        region_name=region, endpoint_url=endpoint_url, profile_name=profile, max_attempts=5
    )
    return resource.get_client()


_Method = TypeVar("_Method", bound=Callable[..., Any])


class S3Unavailable(ConnectionError):
    """S3 could not be used: unreachable, no or refused credentials, no such bucket."""


def explain(error: BotoCoreError | ClientError, bucket: str, endpoint: str) -> str:
    """What went wrong, and the fix, in words a user acts on (never a credential)."""
    if isinstance(error, NoCredentialsError):
        return (
            "no AWS credentials found. Fix: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE, or an instance role) in the environment of the code server and runs"
        )
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            return f"bucket {bucket!r} does not exist at {endpoint}. Fix: create it or fix `bucket`"
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return (
                f"{endpoint} refused the credentials for bucket {bucket!r} ({code}). Fix: check "
                "the AWS credentials and the role's s3:ListBucket / s3:GetObject permissions"
            )
        return f"{endpoint}, bucket {bucket!r}: {code}: {error.response['Error'].get('Message')}"
    return f"cannot reach {endpoint}: {error}. Fix: check `endpoint_url`/`region` and the network"


def _named_failures(method: _Method) -> _Method:
    @functools.wraps(method)
    def wrapper(self: S3Files, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (BotoCoreError, ClientError) as error:
            raise S3Unavailable(explain(error, self.bucket, self.endpoint)) from None

    return wrapper  # type: ignore[return-value]


def _not_found(error: ClientError) -> bool:
    code = error.response.get("Error", {}).get("Code", "")
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchVersion", "400")


class S3Files:
    """The objects below `prefix` in `bucket`, read, archived and removed by relative name."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        stripped = prefix.strip("/")
        self.prefix = f"{stripped}/" if stripped else ""
        self._versioned: bool | None = None
        self.endpoint = client.meta.endpoint_url

    def key(self, path: str) -> str:
        return self.prefix + check_name(path)

    @property
    def versioned(self) -> bool:
        """Whether the bucket keeps versions (a role without the permission reads False)."""
        if self._versioned is None:
            try:
                status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
            except ClientError:
                status = None
            self._versioned = status == "Enabled"
        return self._versioned

    @_named_failures
    def list(self, recursive: bool, start_after: str | None = None) -> Listing:
        """Objects in key order, after the relative key `start_after` when given."""
        listing = Listing()
        for item in self._objects(recursive, start_after):
            relative = item["Key"][len(self.prefix) :]
            if relative.endswith("/"):  # a console-made "folder" marker, not data
                continue
            reason = unsafe_reason(relative)
            if reason:
                listing.refused[relative] = reason
                continue
            listing.names.add(relative)
            listing.files.append(
                FileEntry(
                    relative,
                    item["Size"],
                    item["LastModified"].timestamp(),
                    item["ETag"].strip('"'),
                    item.get("VersionId") if self.versioned else None,
                )
            )
        return listing

    def _objects(self, recursive: bool, start_after: str | None) -> Any:
        options: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix}
        if not recursive:
            options["Delimiter"] = "/"
        if self.versioned:
            if start_after:
                options["KeyMarker"] = self.prefix + start_after
            pages = self.client.get_paginator("list_object_versions").paginate(**options)
            for page in pages:
                yield from (v for v in page.get("Versions", []) if v.get("IsLatest"))
            return
        if start_after:
            options["StartAfter"] = self.prefix + start_after
        for page in self.client.get_paginator("list_objects_v2").paginate(**options):
            yield from page.get("Contents", [])

    @_named_failures
    def stat(self, path: str) -> FileEntry | None:
        return self._head(path, None)

    @_named_failures
    def stat_version(self, path: str, version_id: str) -> FileEntry | None:
        return self._head(path, version_id)

    def _head(self, path: str, version_id: str | None) -> FileEntry | None:
        options = {"Bucket": self.bucket, "Key": self.key(path)}
        if version_id:
            options["VersionId"] = version_id
        try:
            head = self.client.head_object(**options)
        except ClientError as error:
            if _not_found(error):
                return None
            raise
        return FileEntry(
            path,
            head["ContentLength"],
            head["LastModified"].timestamp(),
            head["ETag"].strip('"'),
            head.get("VersionId") if version_id else None,
        )

    @_named_failures
    def fetch(self, pairs: list[tuple[FileEntry, str]], progress: ProgressFn) -> int:
        for entry, local in pairs:
            try:
                download_object(
                    self.client,
                    self.bucket,
                    self.key(entry.path),
                    local,
                    size=entry.size,
                    etag=entry.etag,
                    version_id=entry.version_id,
                    progress=lambda done, e=entry: progress(e.path, done, e.size),
                )
            except ObjectChanged as error:
                raise ChangedDuringTransfer(str(error)) from None
        return 0

    @_named_failures
    def move(self, path: str, target: str) -> str | None:
        """Copy to `target` then delete; returns the copy's ETag (S3 gives a multipart
        object a new one)."""
        source = {"Bucket": self.bucket, "Key": self.key(path)}
        head = self.client.head_object(**source)
        if head["ContentLength"] > _COPY_OBJECT_LIMIT:
            self.client.copy(source, self.bucket, self.key(target))
            etag = self.client.head_object(Bucket=self.bucket, Key=self.key(target))["ETag"]
        else:
            copied = self.client.copy_object(
                CopySource=source, Bucket=self.bucket, Key=self.key(target)
            )
            etag = copied["CopyObjectResult"]["ETag"]
        self.client.delete_object(**source)
        return etag.strip('"')

    @_named_failures
    def remove(self, path: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(path))

    def close(self) -> None:
        pass
