"""The channels of a job as DVC keeps them in an S3 remote: a file output is one object, a directory
output is a ``.dir`` object (its listing) and one object per file.

A file channel is that object (S3Prefix: the object's key is a prefix of itself). A directory channel
is an S3 *ManifestFile* (SageMaker API reference, S3DataSource): a JSON array whose first element is
``{"prefix": "s3://bucket/<remote>/files/md5/"}`` and whose other elements are the keys under it of
the directory's objects, ``"<md5[:2]>/<md5[2:]>"``: exactly the ``.dir``'s files, nothing else under
the prefix. SageMaker downloads each listed object into the channel folder; the job finds every file
there whatever its name (model_lib.sagemaker.environment.Channel). Two files of one directory with the
same bytes are one object, so the channel holds it once.

The manifest is content-addressed (``s3://<job bucket>/manifests/<.dir md5>/<manifest md5>.manifest``),
so launching the same data again writes the same object. Uploading it is :func:`upload_manifests`'s
side effect, done when the job is started; everything else here only reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from model_lib.errors import SageMakerEnvironmentError
from model_lib.sagemaker.jobs import split_s3_uri

DIR_SUFFIX = ".dir"  # DVC 3: a directory's md5 (and its listing object) ends so
MANIFESTS_PREFIX = "manifests"  # under the job bucket
# A channel's S3 distribution: every host gets every object, except the channels below on several
# hosts, where each host gets a disjoint share of the objects (training reads only its share; the
# coordinator evaluates the test split whole, so that one stays replicated).
DEFAULT_DISTRIBUTION = "FullyReplicated"
SHARDED_DISTRIBUTION = "ShardedByS3Key"
SHARDED_CHANNELS = ("train",)
_HEAD_THREADS = 16  # HEAD requests in flight while checking that a directory's objects are pushed


def channel_distribution(name: str, instance_count: int, objects: int) -> str:
    """Return the S3DataDistributionType of channel ``name`` of ``objects`` S3 objects in a job on
    ``instance_count`` instances: :data:`SHARDED_DISTRIBUTION` for a channel of
    :data:`SHARDED_CHANNELS` on several instances with at least one object per instance, else
    :data:`DEFAULT_DISTRIBUTION`.

    Sharding splits objects, not rows: with fewer objects than instances some host would get none (a
    one-file channel is never split), so such a channel stays replicated. The one place this is decided.
    """
    if name in SHARDED_CHANNELS and 1 < instance_count <= objects:
        return SHARDED_DISTRIBUTION
    return DEFAULT_DISTRIBUTION


def host_share(keys: Iterable[str], host_index: int, host_count: int) -> list[str]:
    """Return the keys of a ShardedByS3Key channel that host ``host_index`` of ``host_count`` gets in
    our stand-ins: of the keys in sorted order, those at positions i with i % host_count == host_index.

    The hosts' shares are disjoint and together are every key. SageMaker documents only that each
    instance gets about 1/n of the objects, not which: the training side must find its parts by
    their content and never depend on which host got which.
    """
    return [key for i, key in enumerate(sorted(keys)) if i % host_count == host_index]


@dataclasses.dataclass(frozen=True)
class DirectoryListing:
    """A DVC directory output's ``.dir``: its object URI and (relpath, md5) of each file, in relpath order."""

    uri: str
    entries: tuple[tuple[str, str], ...]

    @property
    def md5(self) -> str:
        """Return the directory's md5 as dvc.lock records it (``<md5>.dir``)."""
        return _md5_of_object(self.uri)

    @property
    def members(self) -> tuple[str, ...]:
        """Return the MD5s of the directory's objects, each once, in relpath order."""
        return tuple(dict.fromkeys(md5 for _, md5 in self.entries))


def is_directory(uri: str) -> bool:
    """Return whether ``uri`` names a DVC directory's ``.dir`` object."""
    return uri.endswith(DIR_SUFFIX)


def _md5_of_object(uri: str) -> str:
    """Return the md5 of a DVC object URI ``.../files/md5/<2>/<30>[.dir]``."""
    parts = uri.rstrip("/").split("/")
    return parts[-2] + parts[-1]


def files_prefix(uri: str) -> str:
    """Return the ``<remote>/files/md5/`` prefix of a DVC object URI (its two last parts removed)."""
    return uri.rstrip("/").rsplit("/", 2)[0] + "/"


def object_key(md5: str) -> str:
    """Return an object's key under :func:`files_prefix`: ``<md5[:2]>/<md5[2:]>``."""
    return f"{md5[:2]}/{md5[2:]}"


def read_listing(uri: str, s3: Any, repo: Path = Path(".")) -> DirectoryListing:
    """Return the ``.dir`` listing at ``uri``: from ``repo``'s DVC cache when it holds it, else from S3.

    Raises:
        SageMakerEnvironmentError: if it is in neither (not pushed) or is not a ``.dir`` listing.
        botocore.exceptions.ClientError: for a refusal other than "no such object".
    """
    md5 = _md5_of_object(uri)
    cached = Path(repo) / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    if cached.is_file():
        raw = cached.read_bytes()
    else:
        from botocore.exceptions import ClientError

        bucket, key = split_s3_uri(uri)
        try:
            raw = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404", "NotFound"):
                raise
            raise SageMakerEnvironmentError(f"{uri} not found; run `dvc push -r <remote>`") from None
    try:
        entries = tuple((str(entry["relpath"]), str(entry["md5"])) for entry in json.loads(raw))
    except (ValueError, TypeError, KeyError) as exc:
        raise SageMakerEnvironmentError(f"{uri}: not a DVC .dir listing ({exc})") from None
    return DirectoryListing(uri, tuple(sorted(entries)))


def missing_members(listing: DirectoryListing, s3: Any) -> list[tuple[str, str]]:
    """Return (relpath, object URI) of each file of ``listing`` whose object is not in S3.

    Raises:
        botocore.exceptions.ClientError: for a refusal other than "no such object" (credentials).
    """
    from botocore.exceptions import ClientError

    prefix = files_prefix(listing.uri)

    def absent(entry: tuple[str, str]) -> tuple[str, str] | None:
        uri = prefix + object_key(entry[1])
        bucket, key = split_s3_uri(uri)
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
            return entry[0], uri
        return None

    with ThreadPoolExecutor(max_workers=_HEAD_THREADS) as pool:  # boto3 clients are thread-safe
        return [found for found in pool.map(absent, listing.entries) if found is not None]


def manifest_body(uri: str, members: tuple[str, ...]) -> bytes:
    """Return the ManifestFile of a directory channel: the remote's ``files/md5/`` prefix, then each member's key."""
    return json.dumps([{"prefix": files_prefix(uri)}, *(object_key(md5) for md5 in members)], indent=0).encode("utf-8")


def manifest_uri(bucket: str, uri: str, members: tuple[str, ...]) -> str:
    """Return where the manifest of the directory ``uri`` with ``members`` goes in ``bucket`` (content-addressed)."""
    digest = hashlib.md5(manifest_body(uri, members)).hexdigest()
    return f"s3://{bucket}/{MANIFESTS_PREFIX}/{_md5_of_object(uri)}/{digest}.manifest"


def upload_manifests(bucket: str, channels: Mapping[str, str], members: Mapping[str, tuple[str, ...]], s3: Any) -> None:
    """Write the manifest of each directory channel (those in ``members``) to ``bucket`` (the same bytes
    to the same key: starting a job again rewrites nothing that differs)."""
    for name, listed in members.items():
        uri = manifest_uri(bucket, channels[name], listed)
        target_bucket, key = split_s3_uri(uri)
        s3.put_object(Bucket=target_bucket, Key=key, Body=manifest_body(channels[name], listed), ContentType="application/json")


def read_manifest(body: bytes, where: str) -> tuple[str, list[str]]:
    """Return (prefix, keys under it) of a ManifestFile's ``body``.

    Raises:
        SageMakerEnvironmentError: naming ``where`` unless it is ``[{"prefix": "s3://..."}, "key", ...]``.
    """
    try:
        items = json.loads(body)
        prefix, keys = items[0]["prefix"], items[1:]
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise SageMakerEnvironmentError(f'{where}: not a manifest ([{{"prefix": ...}}, keys...]): {exc}') from None
    if not isinstance(prefix, str) or not prefix.startswith("s3://") or not all(isinstance(key, str) for key in keys):
        raise SageMakerEnvironmentError(f"{where}: expected an s3:// prefix and string keys")
    return prefix, keys
