"""The run's inputs as MLflow datasets: for each input (a file, or a folder: a DVC directory output)
its name (the channel, or DVC output), digest (the MD5 DVC records for it: see
:mod:`model_lib.tracking.lineage`), source (the DVC remote's object when the data came from, or is
in, a remote: a folder's ``.dir`` object; else the path) and, for the encoded splits, the number of rows.

MLflow itself is not imported here: the sink turns a :class:`DatasetDescription` into MLflow's
``Dataset``. A SageMaker container has no DVC: the launcher names the DVC remote its channels came
from in :data:`DATA_REMOTE_ENV`, and the job's objects are ``<remote>/files/md5/<2>/<30>`` of the
MD5 of the file it reads (the channel's own S3 URI).
"""

from __future__ import annotations

import configparser
import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

from model_lib.tracking.lineage import input_md5

logger = logging.getLogger(__name__)

# Set at launch (model-lib launch, sagemaker-local): the DVC remote URL whose objects are the channels.
DATA_REMOTE_ENV = "MODEL_LIB_DATA_REMOTE"
# Set at launch for the channels that are DVC directory outputs: a JSON object {channel: "<md5>.dir"}.
DATA_DIGESTS_ENV = "MODEL_LIB_DATA_DIGESTS"
TRAINING, EVALUATION = "training", "evaluation"  # the values of MLflow's mlflow.data.context input tag
EVALUATION_INPUTS = ("test",)  # inputs that are scored, not trained on: context "evaluation"
SPLITS = ("train", "test")  # inputs with rows (encoded splits)
_OBJECT = re.compile(r"/files/md5/([0-9a-f]{2})/([0-9a-f]{30}(?:\.dir)?)$")  # a file's or a directory's
_REMOTE_SECTION = re.compile(r"""^remote\s+"(.+)"$""")


@dataclasses.dataclass(frozen=True)
class DatasetDescription:
    """One input of a run, as the run page shows it under "Datasets"."""

    name: str
    digest: str  # the MD5 DVC records (a folder's: "<md5>.dir")
    source: str  # a URI (s3://..., an absolute local path) or a path relative to the working folder
    context: str  # TRAINING or EVALUATION
    rows: int | None = None


@dataclasses.dataclass(frozen=True)
class DataOrigin:
    """Where a run's input files are kept: ``remote`` (a DVC remote URL, or None), whether every
    object is known to be there (a job's channels were downloaded from them) or is looked for, and
    the digests known for inputs by name (a job's folder channels: see the module docstring)."""

    remote: str | None = None
    known_present: bool = False
    digests: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dvc_config(cls, repo: str | os.PathLike[str] = ".") -> DataOrigin:
        """Return the origin of ``repo``'s DVC default remote (none configured: no remote)."""
        return cls(default_remote_url(repo))

    def source(self, path: str | os.PathLike[str], md5: str) -> str:
        """Return the source of the file at ``path`` with MD5 ``md5``: the remote's object when it
        is (or is known to be) there, else the path (relative to the working folder when under it)."""
        if self.remote:
            uri = object_uri(self.remote, md5)
            if self.known_present or object_exists(uri):
                return uri
        return _shown_path(Path(path))


def object_uri(remote: str, md5: str) -> str:
    """Return where DVC 3 keeps a file with MD5 ``md5`` in ``remote``: ``<remote>/files/md5/<2>/<30>``
    (a directory's ``<md5>.dir``: its ``.dir`` object)."""
    return f"{remote.rstrip('/')}/files/md5/{md5[:2]}/{md5[2:]}"


def remote_of_object(uri: str) -> str | None:
    """Return the remote URL of a DVC object URI (the inverse of :func:`object_uri`), or None for a
    URI that is not one."""
    found = _OBJECT.search(uri)
    return uri[: found.start()] if found else None


def default_remote_url(repo: str | os.PathLike[str] = ".") -> str | None:
    """Return the URL of the DVC default remote (``core.remote``) in ``repo``'s .dvc/config and
    .dvc/config.local (the latter wins), a local path resolved against .dvc/ as DVC does; None when
    there is no DVC config, no default remote or it has no URL."""
    folder = Path(repo) / ".dvc"
    values: dict[str, dict[str, str]] = {}
    for name in ("config", "config.local"):
        for section, options in _read_config(folder / name).items():
            values.setdefault(section, {}).update(options)
    default = values.get("core", {}).get("remote")
    url = values.get(f"remote:{default}", {}).get("url") if default else None
    if not url:
        return None
    if "://" not in url and not os.path.isabs(url):
        url = os.path.normpath(folder.resolve() / url)
    return url


def _read_config(path: Path) -> dict[str, dict[str, str]]:
    """Return a DVC config file's sections (``remote "x"`` as ``remote:x``); {} if it cannot be read."""
    parser = configparser.ConfigParser(interpolation=None)
    try:  # DVC indents options (configobj): configparser would read them as continuation lines
        parser.read_string("\n".join(line.strip() for line in path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        if path.exists():
            logger.warning("%s: not read (%s); datasets are shown by path", path, exc)
        return {}
    sections = {}
    for section in parser.sections():
        bare = section.strip().strip("'").strip()
        remote = _REMOTE_SECTION.match(bare)
        sections[f"remote:{remote.group(1)}" if remote else bare] = dict(parser[section])
    return sections


def object_exists(uri: str) -> bool:
    """Return whether the object at ``uri`` (a local path or ``s3://``) exists; False when that
    cannot be found out (another scheme, no credentials, no answer in a few seconds)."""
    if "://" not in uri:
        return Path(uri).is_file()
    if not uri.startswith("s3://"):
        return False
    try:
        import boto3
        from botocore.config import Config

        bucket, _, key = uri[len("s3://") :].partition("/")
        config = Config(connect_timeout=5, read_timeout=5, retries={"max_attempts": 1})
        boto3.client("s3", config=config).head_object(Bucket=bucket, Key=key)
    except Exception as exc:  # tracking never fails a run: the path is shown instead
        logger.info("%s: not confirmed in the DVC remote (%s); the dataset is shown by path", uri, type(exc).__name__)
        return False
    return True


def describe_inputs(
    files: Mapping[str, str | os.PathLike[str]], origin: DataOrigin = DataOrigin(), context: str = TRAINING
) -> list[DatasetDescription]:
    """Return a description of each input in ``files`` (by input name: a file or a folder) that
    exists; ``context`` is that of every input but those of :data:`EVALUATION_INPUTS` (always "evaluation")."""
    found = []
    for name, path in files.items():
        if not Path(path).exists():
            continue
        md5 = origin.digests.get(name) or input_md5(path)
        if md5 is None:
            continue
        found.append(
            DatasetDescription(
                name=name,
                digest=md5,
                source=origin.source(path, md5),
                context=EVALUATION if name in EVALUATION_INPUTS else context,
                rows=_rows(path) if name in SPLITS else None,
            )
        )
    return found


def _rows(path: str | os.PathLike[str]) -> int | None:
    """Return the rows of an encoded split folder (from its parts' small members; of the whole split
    when a host holds some parts of it), or None if it is not one."""
    from model_lib.errors import DataError
    from model_lib.prepared import split_shape

    try:
        return split_shape(path, some_parts=True)[0]
    except DataError:
        return None


def _shown_path(path: Path) -> str:
    """Return ``path`` relative to the working folder when it is under it, else absolute."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(resolved)
