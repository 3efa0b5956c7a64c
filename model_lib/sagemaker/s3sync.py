"""S3 transfers of a recorded job run here: channels and checkpoints restored from S3, the checkpoint
folder mirrored back while the job runs, the model archive uploaded at its end.

Each file moves with boto3's managed transfers (``download_file``/``upload_file``: multipart and
retries are s3transfer's). What stays ours is SageMaker's policy, which no installed library has:
an S3 *key prefix* (SageMaker's S3Prefix, not a folder: an object's own key is a prefix of itself)
is downloaded as the toolkit lays it out, a ManifestFile's objects each at its key relative to the
manifest's prefix (a ShardedByS3Key channel: only the host's share); the mirror also deletes in S3 what the job deleted
(fsspec's ``put`` and boto3 only copy) and skips the hidden folders of a write in progress. s3fs
works on folders and keeps its own listing cache, which a mirror polling one prefix must not trust.
"""

from __future__ import annotations

import contextlib
import logging
import tarfile
import threading
from pathlib import Path
from typing import Any

from model_lib.sagemaker.jobs import split_s3_uri

logger = logging.getLogger(__name__)


def download_prefix(s3: Any, uri: str, folder: Path, share: tuple[int, int] | None = None) -> int:
    """Download the object ``uri`` or every object under the key prefix ``uri`` into ``folder``
    (paths relative to the prefix; an object named by the whole URI keeps its own name); return the count.
    With ``share`` (host index, host count) only that host's ShardedByS3Key share of the objects
    (:func:`channels.host_share`).

    Raises:
        SageMakerEnvironmentError: if ``uri`` is not an s3:// URI.
    """
    bucket, key = split_s3_uri(uri)
    folder.mkdir(parents=True, exist_ok=True)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
    keys = _share([item["Key"] for page in pages for item in page.get("Contents", [])], share)
    for object_key in keys:
        relative = object_key[len(key) :].lstrip("/") or Path(object_key).name
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, object_key, str(target))
    return len(keys)


def download_manifest(s3: Any, uri: str, folder: Path, share: tuple[int, int] | None = None) -> int:
    """Download the objects the ManifestFile at ``uri`` lists into ``folder``, each at its key relative
    to the manifest's prefix (``<prefix><key>`` -> ``folder/<key>``); return the count. With ``share``
    (host index, host count) only that host's ShardedByS3Key share of them (:func:`channels.host_share`).

    Raises:
        SageMakerEnvironmentError: if ``uri`` is not an s3:// URI or not a manifest.
    """
    from model_lib.sagemaker.channels import read_manifest

    bucket, key = split_s3_uri(uri)
    prefix, keys = read_manifest(s3.get_object(Bucket=bucket, Key=key)["Body"].read(), uri)
    keys = _share(keys, share)
    source_bucket, source_prefix = split_s3_uri(prefix)
    folder.mkdir(parents=True, exist_ok=True)
    for relative in keys:
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(source_bucket, source_prefix + relative, str(target))
    return len(keys)


def _share(keys: list[str], share: tuple[int, int] | None) -> list[str]:
    """Return ``keys``, or with ``share`` (host index, host count) that host's share of them."""
    from model_lib.sagemaker.channels import host_share

    return keys if share is None else host_share(keys, *share)


def upload_folder_archive(s3: Any, folder: Path, archive: Path, uri: str) -> None:
    """Pack the files of ``folder`` (names relative to it, as model.tar.gz holds them) into ``archive``
    and upload it to ``uri``."""
    with tarfile.open(archive, "w:gz") as packed:
        for path in sorted(folder.iterdir()):
            packed.add(path, arcname=path.name)
    s3.upload_file(str(archive), *split_s3_uri(uri))


class CheckpointMirror:
    """Mirrors a local checkpoint folder to ``uri`` every ``seconds`` while the job runs, and once
    more at the end, as SageMaker does: new and changed files are uploaded, files gone from the
    folder are deleted in S3. A context manager."""

    def __init__(self, s3: Any, folder: Path, uri: str, seconds: float) -> None:
        self.s3, self.folder, self.seconds = s3, folder, seconds
        self.bucket, self.prefix = split_s3_uri(uri if uri.endswith("/") else uri + "/")
        self._sent: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="checkpoint-sync", daemon=True)

    def _files(self) -> dict[str, Path]:
        # Temporary folders of a write in progress are not synced (SageMaker would upload them as they are).
        return {
            str(p.relative_to(self.folder)): p
            for p in self.folder.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(self.folder).parts)
        }

    def sync(self) -> None:
        """Upload what is new or changed since the last round; delete in S3 what left the folder."""
        files = self._files()
        for name, path in files.items():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            signature = (stat.st_size, stat.st_mtime_ns)
            if self._sent.get(name) != signature:
                with contextlib.suppress(FileNotFoundError):
                    self.s3.upload_file(str(path), self.bucket, self.prefix + name)
                    self._sent[name] = signature
        for name in set(self._sent) - set(files):
            self.s3.delete_object(Bucket=self.bucket, Key=self.prefix + name)
            del self._sent[name]

    def _loop(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                self.sync()
            except Exception as exc:  # a failed upload is tried again at the next round
                logger.warning("checkpoint sync: %s", exc)

    def __enter__(self) -> CheckpointMirror:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.sync()
