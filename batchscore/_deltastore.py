"""Delta tables on object stores: the run's storage options in delta-rs's words, and commits that stay safe.

delta-rs reaches a store through the Rust ``object_store`` crate, which names its settings otherwise than
pyarrow does. A run has one set of options, in pyarrow's names (``--storage-option``, ``[storage]``, see
:data:`batchscore._objectstore.OPTIONS`); :func:`delta_options` says the same thing to delta-rs, once:

==========================  ====================================  ===============================================
pyarrow (batchscore)        S3                                    GCS / Azure
==========================  ====================================  ===============================================
``endpoint_override``       ``AWS_ENDPOINT_URL`` (and             ``GOOGLE_BASE_URL`` / ``azure_storage_endpoint``
+ ``scheme``                ``AWS_ALLOW_HTTP`` for ``http``)      (``blob_storage_authority``), ``allow_http``
``region``                  ``AWS_REGION``                        -
``anonymous``               ``AWS_SKIP_SIGNATURE``                ``GOOGLE_SKIP_SIGNATURE``
``access_key``, ...         ``AWS_ACCESS_KEY_ID``,                ``azure_storage_account_name``, ``_key``,
                            ``AWS_SECRET_ACCESS_KEY``, ...        ``azure_storage_sas_key``, ``azure_client_id``...
``connect_timeout``, ...    ``connect_timeout``, ``timeout``      the same
``retry_strategy``          ``max_retries``                       ``retry_timeout`` (``retry_time_limit``)
==========================  ====================================  ===============================================

``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` are honoured as the rest of batchscore honours them, and the
bucket's region is found the same way. Options that only tune pyarrow's own client are left out; the few
that would change who is asking or what is trusted, and that delta-rs cannot express, are refused.

**Safe commits.** A Delta commit is the creation of the next log entry, only if it is absent. delta-rs 1.x
asks the store for exactly that (``PutMode::Create``): S3 ``PUT`` with ``If-None-Match: *`` (what
``conditional_put = etag`` turns on, set here explicitly so that no environment variable can turn it off),
GCS ``ifGenerationMatch=0``, Azure ``If-None-Match: *``; no DynamoDB lock and no unsafe rename. A store that
rejects the condition fails the commit (one line naming the fix); one that *ignores* it would let two runs
overwrite each other's commit, so :func:`check_safe_commits` tries it once per run, before the first row is
read, and refuses such a store.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from typing import Any

from batchscore import _objectstore, storage
from batchscore.errors import JobSpecError, OutputError

IGNORED = frozenset(
    {
        # pyarrow's own client: how it buffers, caches and creates, nothing delta-rs needs to know
        "background_writes",
        "load_frequency",
        "allow_delayed_open",
        "allow_bucket_creation",
        "allow_bucket_deletion",
        "check_directory_existence_before_creation",
        "default_bucket_location",
        "project_id",
        "dfs_storage_authority",
        "dfs_storage_scheme",
    }
)
"""Storage options that tune pyarrow's client only: not handed to delta-rs."""

UNSUPPORTED = {
    "external_id": "pass the role's credentials through the environment (AWS_ACCESS_KEY_ID, ...) instead",
    "tls_ca_file_path": "add the CA to the system's trust store instead",
    "access_token": "use application default credentials (GOOGLE_APPLICATION_CREDENTIALS) instead",
    "target_service_account": "use application default credentials (GOOGLE_APPLICATION_CREDENTIALS) instead",
}
"""Storage options delta-rs has no equivalent of, and what to do instead."""

_S3_NAMES = {
    "access_key": "AWS_ACCESS_KEY_ID",
    "secret_key": "AWS_SECRET_ACCESS_KEY",
    "session_token": "AWS_SESSION_TOKEN",
    "role_arn": "AWS_IAM_ROLE_ARN",
    "session_name": "AWS_IAM_ROLE_SESSION_NAME",
}
_AZURE_NAMES = {
    "account_key": "azure_storage_account_key",
    "sas_token": "azure_storage_sas_key",
    "client_id": "azure_client_id",
    "client_secret": "azure_client_secret",
    "tenant_id": "azure_tenant_id",
}


def delta_options(uri: str, options: Mapping[str, object] | None = None) -> dict[str, str] | None:
    """The ``storage_options`` deltalake wants for ``uri``, from the run's options (pyarrow's names).

    None for a local path, which needs none. Unknown names and bad values are usage errors (exit 2), as for
    every other path of the run.
    """
    if not storage.is_uri(uri) or uri.startswith("file://"):
        return None
    scheme = uri.partition("://")[0].lower()
    family = _objectstore.FAMILIES.get(scheme)
    if family is None:
        msg = (
            f"--format delta cannot write to {scheme}:// ({uri}): delta-rs reaches s3://, gs:// and abfs:// "
            "(and local paths); write the table to one of those"
        )
        raise JobSpecError(msg)
    checked = _objectstore.check_options(options or {})
    mine = {k: v for k, v in checked.items() if k in _objectstore.OPTIONS[family] and k not in IGNORED}
    for name in mine:
        if name in UNSUPPORTED:
            msg = f"storage option {name!r} has no equivalent in delta-rs, so --format delta cannot use it; "
            raise JobSpecError(msg + UNSUPPORTED[name])
    out = {"s3": _s3, "gcs": _gcs, "azure": _azure}[family](uri, mine)
    out.update(_client(family, mine))
    return out


def _s3(uri: str, opts: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    endpoint, scheme = _objectstore._s3_endpoint(opts)
    if endpoint:
        out["AWS_ENDPOINT_URL"] = f"{scheme or 'https'}://{endpoint}"
        if scheme == "http":
            out["AWS_ALLOW_HTTP"] = "true"
    bucket = uri.partition("://")[2].split("/", 1)[0]
    region = _objectstore._s3_region(bucket, opts)
    if region:
        out["AWS_REGION"] = region
    if opts.get("anonymous"):
        out["AWS_SKIP_SIGNATURE"] = "true"
    out.update({theirs: str(opts[ours]) for ours, theirs in _S3_NAMES.items() if ours in opts})
    if opts.get("force_virtual_addressing"):
        out["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "true"
    strategy = _objectstore._retry_strategy(str(opts.get("retry_strategy", "standard")))
    out["max_retries"] = str(max(strategy.max_attempts - 1, 0))  # as pyarrow: 3 attempts, not 10 retries
    out["conditional_put"] = "etag"  # a commit is a PUT with If-None-Match: *; never off, whatever the env says
    return out


def _gcs(uri: str, opts: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    endpoint, scheme = _objectstore._split_endpoint(opts.get("endpoint_override"), opts.get("scheme"))
    if endpoint:
        out["GOOGLE_BASE_URL"] = f"{scheme or 'https'}://{endpoint}"
        if scheme == "http":
            out["allow_http"] = "true"
    if opts.get("anonymous"):
        out["GOOGLE_SKIP_SIGNATURE"] = "true"
    limit = float(opts.get("retry_time_limit", _objectstore.GCS_RETRY_LIMIT_S))
    out["retry_timeout"] = f"{round(limit * 1000)}ms"
    return out


def _azure(uri: str, opts: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    _, in_uri = _objectstore._azure_path(uri.partition("://")[2])
    account = opts.get("account_name") or in_uri or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
    if account:
        out["azure_storage_account_name"] = str(account)
    out.update({theirs: str(opts[ours]) for ours, theirs in _AZURE_NAMES.items() if ours in opts})
    if "blob_storage_authority" in opts:
        scheme = str(opts.get("blob_storage_scheme", "https"))
        out["azure_storage_endpoint"] = f"{scheme}://{opts['blob_storage_authority']}/{account}"
        if scheme == "http":
            out["allow_http"] = "true"
    return out


def _client(family: str, opts: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for ours, theirs in (("connect_timeout", "connect_timeout"), ("request_timeout", "timeout")):
        if ours in opts:
            out[theirs] = f"{round(float(opts[ours]) * 1000)}ms"
    return out


PROBE_FOLDER = "_batchscore"
"""Where :func:`check_safe_commits` tries its conditional writes, in the table's folder (hidden from Delta)."""


def safe_commits_needed(uri: str) -> bool:
    """Whether :func:`check_safe_commits` has something to check: S3, where stores differ."""
    return _objectstore.FAMILIES.get(uri.partition("://")[0].lower()) == "s3" if storage.is_uri(uri) else False


def check_safe_commits(uri: str, options: Mapping[str, object] | None) -> None:
    """Refuse a store that would let two commits to the table overwrite each other (or cannot be reached).

    Creates ``TABLE/_batchscore/commit-probe-<uuid>`` only if absent, twice: the second must be refused, as
    the next log entry of a table is refused to all but the first run that writes it. The probe object is then
    deleted; its name starts with ``_``, so no Delta reader, nor ``vacuum``, ever looks at it.
    """
    if not safe_commits_needed(uri):
        return
    probe = storage.resolve(uri, dict(options or {})).child(PROBE_FOLDER, f"commit-probe-{uuid.uuid4().hex}")
    try:
        first = _objectstore.put_if(probe, b"probe", None)
        second = _objectstore.put_if(probe, b"probe", None)
        if first is not None:
            _objectstore.delete_if(probe, second or first)
    except OSError as exc:  # raised from obstore's own error, which says best what the store said
        said = _objectstore.explain(exc.__cause__ or exc, bucket=_bucket(uri)) or storage.describe_os_error(exc)
        msg = f"cannot write Delta table {uri}: {said}"
        raise OutputError(msg) from exc
    if first is None:  # a fresh name refused: the store says "not found" (a bucket gone since it was listed)
        msg = f"cannot write Delta table {uri}: the store refused to create {probe.uri}; check the bucket name"
        raise OutputError(msg + ", the endpoint and the region")
    if second is None:
        return
    msg = (
        f"the store of {uri} does not honour conditional writes (S3 If-None-Match: *), so two runs committing "
        "to the table at once could overwrite each other's commit; use a store that supports them (AWS S3, "
        "MinIO, R2), or write the table elsewhere (another --out)"
    )
    raise OutputError(msg)


def explain(exc: BaseException, uri: str) -> str | None:
    """A store's error from delta-rs as one line naming what to check (bucket, access, endpoint); None if not."""
    if not storage.is_uri(uri):
        return None
    return _objectstore.explain(exc, bucket=_bucket(uri))


def _bucket(uri: str) -> str:
    rest = uri.partition("://")[2]
    return _objectstore._azure_path(rest)[0].split("/", 1)[0]
