"""Object stores behind :mod:`batchscore.storage`: URIs to pyarrow filesystems, one-line errors, conditional writes.

Loaded only when a run names a ``scheme://`` location other than ``file://``, or writes a Delta table
(:mod:`batchscore._deltastore` says these options in delta-rs's words).

- **Filesystems.** ``s3://`` (``s3a://``), ``gs://`` (``gcs://``) and ``abfs://`` (``abfss://``, ``az://``) get
  pyarrow's own ``S3FileSystem``, ``GcsFileSystem`` and ``AzureFileSystem``; any other scheme goes through
  fsspec (``PyFileSystem(FSSpecHandler(...))``) when it is installed. Options use pyarrow's names
  (:data:`OPTIONS`) and each store's standard credential chain does the rest. One filesystem is built per
  store, bucket region and options, so a run opens one client however many paths it resolves.
- **Errors.** :func:`explain` turns a store's error into one line naming what to check (no such bucket,
  access denied, endpoint unreachable); ``storage.describe_os_error`` uses it, so every caller's message does.
- **Conditional writes.** pyarrow.fs cannot say "create only if absent" or "replace only if unchanged", so
  those few calls go through ``obstore`` (``pip install 'batchscore[s3]'``, ``[gcs]`` or ``[azure]``):
  S3 ``If-None-Match: *`` / ``If-Match``, GCS ``ifGenerationMatch``, Azure ``If-None-Match`` / ``If-Match``.
  :class:`batchscore._objectlock.ObjectStoreLock` is built on them.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs

from batchscore.errors import JobSpecError

if TYPE_CHECKING:
    from batchscore.storage import Location

log = logging.getLogger("batchscore")

FAMILIES = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "abfs": "azure",
    "abfss": "azure",
    "az": "azure",
}
"""URI scheme -> the store it names."""

OPTIONS: dict[str, dict[str, type]] = {
    "s3": {
        "access_key": str,
        "secret_key": str,
        "session_token": str,
        "anonymous": bool,
        "region": str,
        "request_timeout": float,
        "connect_timeout": float,
        "scheme": str,
        "endpoint_override": str,
        "background_writes": bool,
        "role_arn": str,
        "session_name": str,
        "external_id": str,
        "load_frequency": int,
        "allow_delayed_open": bool,
        "allow_bucket_creation": bool,
        "allow_bucket_deletion": bool,
        "check_directory_existence_before_creation": bool,
        "retry_strategy": str,
        "force_virtual_addressing": bool,
        "tls_ca_file_path": str,
    },
    "gcs": {
        "anonymous": bool,
        "access_token": str,
        "target_service_account": str,
        "default_bucket_location": str,
        "scheme": str,
        "endpoint_override": str,
        "retry_time_limit": float,
        "project_id": str,
    },
    "azure": {
        "account_name": str,
        "account_key": str,
        "blob_storage_authority": str,
        "blob_storage_scheme": str,
        "dfs_storage_authority": str,
        "dfs_storage_scheme": str,
        "sas_token": str,
        "client_id": str,
        "client_secret": str,
        "tenant_id": str,
    },
}
"""The storage options each store takes: pyarrow's own constructor argument names, and their types."""

SECRETS = frozenset({"access_key", "secret_key", "session_token", "access_token", "account_key", "sas_token"})
SECRETS |= {"client_secret"}
"""Options that are never logged nor written to a manifest (see :func:`redact`)."""

GCS_RETRY_LIMIT_S = 60.0
"""pyarrow's GCS client retries a failing request for 15 minutes by default; a wrong endpoint should fail sooner."""

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


# -- options ------------------------------------------------------------------------------------


def check_options(options: Mapping[str, object]) -> dict[str, str | int | float | bool]:
    """Validate ``--storage-option`` / ``[storage]`` values: known names, values of the right type (exit 2)."""
    known = {name: kind for table in OPTIONS.values() for name, kind in table.items()}
    checked: dict[str, str | int | float | bool] = {}
    for name, value in options.items():
        kind = known.get(name)
        if kind is None:
            import difflib

            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            msg = (
                f"unknown storage option {name!r}{hint}; storage options are pyarrow's names, e.g. "
                "endpoint_override, region, scheme, anonymous, retry_strategy (see README, Object storage)"
            )
            raise JobSpecError(msg)
        checked[name] = _coerce(name, value, kind)
    if "retry_strategy" in checked:
        _retry_strategy(str(checked["retry_strategy"]))  # fails early on a bad value
    return checked


def _coerce(name: str, value: object, kind: type) -> str | int | float | bool:
    shown = "<hidden>" if name in SECRETS else repr(value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
    elif kind in (int, float) and not isinstance(value, bool):
        try:
            number = kind(value)  # type: ignore[call-overload,arg-type]
        except (TypeError, ValueError):
            pass
        else:
            if number >= 0:
                return number  # type: ignore[no-any-return]
    elif kind is str and isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    wanted = {bool: "true or false", int: "a whole number", float: "a number of seconds", str: "a string"}[kind]
    msg = f"storage option {name!r} must be {wanted}, got {shown}"
    raise JobSpecError(msg)


def redact(options: Mapping[str, object]) -> dict[str, object]:
    """The options with every secret replaced, for manifests and logs."""
    return {k: ("<hidden>" if k in SECRETS else v) for k, v in options.items()}


def _retry_strategy(text: str) -> pafs.S3RetryStrategy:
    """``standard`` or ``default``, optionally ``:N`` attempts: pyarrow's two S3 retry strategies."""
    kind, _, attempts = text.partition(":")
    classes = {"standard": pafs.AwsStandardS3RetryStrategy, "default": pafs.AwsDefaultS3RetryStrategy}
    if kind not in classes or (attempts and not attempts.isdigit()):
        msg = f"storage option 'retry_strategy' must be standard or default, optionally :N attempts, got {text!r}"
        raise JobSpecError(msg)
    return classes[kind](max_attempts=int(attempts or 3))


# -- resolving ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Store:
    """What a filesystem was built from: enough to build the matching obstore client for conditional writes."""

    family: str
    options: tuple[tuple[str, Any], ...]
    region: str | None


_CACHE: dict[tuple[Any, ...], pafs.FileSystem] = {}
_STORES: dict[int, _Store] = {}  # id(filesystem) -> what built it; the filesystems live in _CACHE
_REGIONS: dict[str, str | None] = {}
_CACHE_LOCK = threading.Lock()


def resolve(uri: str, options: dict[str, Any]) -> Location:
    """A location on the object store a URI names, configured by pyarrow's own option names."""
    from batchscore.storage import Location

    scheme, _, rest = uri.partition("://")
    scheme = scheme.lower()
    family = FAMILIES.get(scheme)
    if family is None:
        fs, path = _fsspec(scheme, uri)
        return Location(fs, path.rstrip("/"), scheme)
    checked = check_options(options)
    mine = {k: v for k, v in checked.items() if k in OPTIONS[family]}
    if family == "azure":
        path, account = _azure_path(rest)
        if account and "account_name" not in mine:
            mine["account_name"] = account
    else:
        path = rest
    path = path.strip("/")
    bucket = path.split("/", 1)[0]
    if not bucket:
        msg = f"{uri} names no bucket; write {scheme}://BUCKET/PATH"
        raise JobSpecError(msg)
    region = _s3_region(bucket, mine) if family == "s3" else None
    key = (family, region, tuple(sorted(mine.items())))
    with _CACHE_LOCK:
        fs = _CACHE.get(key)
        if fs is None:
            fs = _build(family, mine, region)
            _CACHE[key] = fs
            _STORES[id(fs)] = _Store(family, tuple(sorted(mine.items())), region)
            log.debug("opened a %s client (%s)", family, _describe_endpoint(family, mine))
    return Location(fs, path, scheme)


def _build(family: str, options: dict[str, Any], region: str | None) -> pafs.FileSystem:
    kwargs = dict(options)
    if family == "s3":
        endpoint, scheme = _s3_endpoint(kwargs)
        if endpoint:
            kwargs["endpoint_override"] = endpoint
        if scheme:
            kwargs["scheme"] = scheme
        if region:
            kwargs["region"] = region
        if "retry_strategy" in kwargs:
            kwargs["retry_strategy"] = _retry_strategy(kwargs["retry_strategy"])
        kwargs.setdefault("allow_delayed_open", True)  # a small object is one PUT, not a multipart upload
        return pafs.S3FileSystem(**kwargs)
    if family == "gcs":
        endpoint, scheme = _split_endpoint(kwargs.get("endpoint_override"), kwargs.get("scheme"))
        if endpoint:
            kwargs["endpoint_override"], kwargs["scheme"] = endpoint, scheme or "https"
        kwargs["retry_time_limit"] = timedelta(seconds=float(kwargs.get("retry_time_limit", GCS_RETRY_LIMIT_S)))
        return pafs.GcsFileSystem(**kwargs)
    account = kwargs.pop("account_name", None) or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
    if not account:
        msg = "an abfs:// path needs a storage account: abfs://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH, "
        msg += "--storage-option account_name=ACCOUNT, or AZURE_STORAGE_ACCOUNT_NAME"
        raise JobSpecError(msg)
    if "account_key" not in kwargs and os.environ.get("AZURE_STORAGE_ACCOUNT_KEY"):
        kwargs["account_key"] = os.environ["AZURE_STORAGE_ACCOUNT_KEY"]
    return pafs.AzureFileSystem(account, **kwargs)


def _s3_endpoint(options: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(host[:port], scheme)`` from ``endpoint_override``, else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``."""
    raw = options.get("endpoint_override")
    if raw is None:
        raw = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    return _split_endpoint(raw, options.get("scheme"))


def _split_endpoint(raw: str | None, scheme: str | None) -> tuple[str | None, str | None]:
    if raw and "://" in raw:
        given, _, raw = raw.partition("://")
        scheme = scheme or given
    return (raw.rstrip("/") if raw else None), scheme


def _s3_region(bucket: str, options: Mapping[str, Any]) -> str | None:
    """The bucket's region, asked of AWS once per bucket, when neither a region nor an endpoint is given."""
    if "region" in options:
        return str(options["region"])
    if _s3_endpoint(options)[0] or options.get("anonymous"):
        return None
    if os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"):
        return None  # the SDK's own default; a bucket elsewhere still answers with a clear error
    if bucket not in _REGIONS:
        try:
            _REGIONS[bucket] = pafs.resolve_s3_region(bucket)
        except OSError:
            _REGIONS[bucket] = None  # let the first real request say what is wrong
    return _REGIONS[bucket]


def _azure_path(rest: str) -> tuple[str, str | None]:
    """``container@account.dfs.core.windows.net/path`` -> ``(container/path, account)``; plain paths unchanged."""
    head, sep, tail = rest.partition("/")
    container, at, host = head.partition("@")
    if not at:
        return rest, None
    return f"{container}{sep}{tail}", host.split(".", 1)[0]


def _describe_endpoint(family: str, options: Mapping[str, Any]) -> str:
    if family == "s3":
        endpoint, scheme = _s3_endpoint(options)
        return f"endpoint {scheme or 'https'}://{endpoint}" if endpoint else "AWS endpoints"
    if family == "gcs":
        return f"endpoint {options['endpoint_override']}" if options.get("endpoint_override") else "Google endpoints"
    return f"account {options.get('account_name') or os.environ.get('AZURE_STORAGE_ACCOUNT_NAME')}"


def _fsspec(scheme: str, uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        import fsspec
    except ImportError:
        msg = (
            f"{uri}: {scheme}:// is not a store batchscore knows (s3, gs, abfs, file); "
            "pip install fsspec and the package that provides it, or use one of those"
        )
        raise JobSpecError(msg) from None
    try:
        fs = fsspec.filesystem(scheme)
    except (ImportError, ValueError) as exc:
        msg = f"{uri}: no filesystem for {scheme}:// ({' '.join(str(exc).split())}); install the package providing it"
        raise JobSpecError(msg) from exc
    key = ("fsspec", scheme)
    with _CACHE_LOCK:
        wrapped = _CACHE.get(key)
        if wrapped is None:
            wrapped = pafs.PyFileSystem(pafs.FSSpecHandler(fs))
            _CACHE[key] = wrapped
    return wrapped, str(fs._strip_protocol(uri))


# -- errors -------------------------------------------------------------------------------------

_BUCKET = re.compile(r"in bucket '([^']+)'|bucket[ :]+'?([A-Za-z0-9._-]+)'?", re.IGNORECASE)
_PROBLEMS: list[tuple[re.Pattern[str], Callable[[str], str]]] = [
    (
        re.compile(
            r"NO_SUCH_BUCKET|NoSuchBucket|bucket does not exist|ContainerNotFound|bucket ('[^']*' )?not found", re.I
        ),
        lambda bucket: f"bucket {bucket} does not exist; check the bucket name, the endpoint and the region",
    ),
    (
        re.compile(
            r"ACCESS_DENIED|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|PermissionDenied|Unauthenticated"
            r"|AuthorizationFailure|403 Forbidden|401 Unauthorized|INVALID_ACCESS_KEY|UNRECOGNIZED_CLIENT",
            re.I,
        ),
        lambda bucket: (
            f"access denied to bucket {bucket}; check the credentials (environment, profile, role or workload "
            "identity) and the bucket's permissions"
        ),
    ),
    (
        re.compile(
            r"NETWORK_CONNECTION|curlCode|Could not connect|Could not resolve|Connection refused|timed out|\btimeout\b"
            r"|error sending request|tcp connect|dns error|Couldn't connect|UNAVAILABLE|Retry policy exhausted",
            re.I,
        ),
        lambda bucket: (
            "cannot reach the storage endpoint; check endpoint_override (or AWS_ENDPOINT_URL), scheme "
            "(http or https) and the network"
        ),
    ),
]


_STORE_ERROR = re.compile(r"AWS Error|google::cloud|Azure|curl|bucket|S3|GCS|storage\.googleapis|Error performing")


_URL_QUERY = re.compile(r"(https?://[^\s?\"']+)\?[^\s\"']*")


def scrub(text: str) -> str:
    """A store's message without URL query strings, where SAS tokens and signatures travel."""
    return _URL_QUERY.sub(r"\1", text)


def explain(exc: BaseException, *, bucket: str | None = None) -> str | None:
    """One line saying what went wrong with a store and what to check; None if it is not a store error.

    ``bucket`` names the bucket when the caller knows it (delta-rs's messages do not say it plainly).
    """
    text = " ".join(str(exc).split("Debug source:", 1)[0].split())  # obstore appends a debug dump
    if not _STORE_ERROR.search(text):
        return None  # a local disk's error says it best itself
    for pattern, say in _PROBLEMS:
        if pattern.search(text):
            found = _BUCKET.search(text)
            named = bucket or (found.group(1) or found.group(2) if found else None)
            return say(f"'{named}'" if named else "named")
    return None


def _os_error(exc: Exception, where: str) -> OSError:
    """An obstore error as the OSError subclass callers already catch, with a one-line message."""
    from obstore.exceptions import NotFoundError, PermissionDeniedError, UnauthenticatedError

    first = scrub(str(exc).split("\n", 1)[0].strip())
    message = f"{where}: {explain(exc) or first}"
    if isinstance(exc, NotFoundError):
        return FileNotFoundError(message)
    if isinstance(exc, PermissionDeniedError | UnauthenticatedError):
        return PermissionError(message)
    return OSError(message)


# -- conditional writes (obstore) ---------------------------------------------------------------

_CLIENTS: dict[tuple[_Store, str], Any] = {}
_RETRY: dict[str, Any] = {"max_retries": 3, "retry_timeout": timedelta(seconds=30)}
"""obstore retries for 3 minutes by default: a lock call must give up well within a lock's expiry."""


def _client(location: Location) -> tuple[Any, str]:
    """The obstore client for a location's bucket, configured like its pyarrow filesystem, and the object key."""
    store = _STORES.get(id(location.fs))
    if store is None:
        family = FAMILIES.get(location.scheme)
        if family is None:
            msg = (
                f"{location.uri}: {location.scheme}:// offers no conditional write through batchscore, so two "
                "runs could not be kept apart; write the output to s3://, gs://, abfs:// or a local path"
            )
            raise OSError(msg)
        store = _Store(family, (), None)
    bucket, _, key = location.path.partition("/")
    with _CACHE_LOCK:
        client = _CLIENTS.get((store, bucket))
        if client is None:
            client = _new_client(store, bucket)
            _CLIENTS[(store, bucket)] = client
    return client, key


def _new_client(store: _Store, bucket: str) -> Any:
    try:
        from obstore.store import AzureStore, GCSStore, S3Store
    except ImportError:
        extra = {"s3": "s3", "gcs": "gcs", "azure": "azure"}[store.family]
        msg = (
            f"writing output to {store.family} needs conditional writes, which pyarrow cannot make; "
            f"pip install 'batchscore[{extra}]'"
        )
        raise OSError(msg) from None
    opts = dict(store.options)
    client_options: dict[str, Any] = {}
    for ours, theirs in (("connect_timeout", "connect_timeout"), ("request_timeout", "timeout")):
        if ours in opts:
            client_options[theirs] = timedelta(seconds=float(opts[ours]))
    if store.family == "s3":
        config: dict[str, Any] = {}
        endpoint, scheme = _s3_endpoint(opts)
        if endpoint:
            config["endpoint"] = f"{scheme or 'https'}://{endpoint}"
            client_options["allow_http"] = (scheme or "https") == "http"
        config["virtual_hosted_style_request"] = bool(opts.get("force_virtual_addressing", False))
        region = store.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        config["region"] = region or "us-east-1"
        provider = None
        if opts.get("anonymous"):
            config["skip_signature"] = True
        elif "access_key" in opts:
            config["access_key_id"] = opts["access_key"]
            config["secret_access_key"] = opts.get("secret_key", "")
            if "session_token" in opts:
                config["token"] = opts["session_token"]
        else:
            provider = _boto3_credentials()
        retry = dict(_RETRY)
        if "retry_strategy" in opts:
            retry["max_retries"] = max(_retry_strategy(str(opts["retry_strategy"])).max_attempts - 1, 0)
        return S3Store(
            bucket,
            config=config,  # type: ignore[arg-type]
            client_options=client_options,  # type: ignore[arg-type]
            retry_config=retry,  # type: ignore[arg-type]
            credential_provider=provider,
        )
    if store.family == "gcs":
        gcs: dict[str, Any] = {}
        endpoint, scheme = _split_endpoint(opts.get("endpoint_override"), opts.get("scheme"))
        if endpoint:
            gcs["base_url"] = f"{scheme or 'https'}://{endpoint}"
            client_options["allow_http"] = (scheme or "https") == "http"
        if opts.get("anonymous"):
            gcs["skip_signature"] = True
        if "access_token" in opts:
            gcs["bearer_token"] = opts["access_token"]
        return GCSStore(bucket, config=gcs, client_options=client_options, retry_config=_RETRY)  # type: ignore[arg-type]
    azure: dict[str, Any] = {"container_name": bucket}
    account = opts.get("account_name") or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
    if account:
        azure["account_name"] = account
    for ours, theirs in (
        ("account_key", "account_key"),
        ("sas_token", "sas_key"),
        ("client_id", "client_id"),
        ("client_secret", "client_secret"),
        ("tenant_id", "tenant_id"),
    ):
        if ours in opts:
            azure[theirs] = opts[ours]
    if "blob_storage_authority" in opts:
        scheme = str(opts.get("blob_storage_scheme", "https"))
        azure["endpoint"] = f"{scheme}://{opts['blob_storage_authority']}/{account}"
        client_options["allow_http"] = scheme == "http"
    return AzureStore(config=azure, client_options=client_options, retry_config=_RETRY)  # type: ignore[arg-type]


def _boto3_credentials() -> Any:
    """boto3's full credential chain (profiles and SSO included) when boto3 is there; else obstore's own."""
    try:
        import boto3
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:
        return None
    return Boto3CredentialProvider(boto3.session.Session())


@dataclass(frozen=True)
class Version:
    """What identifies one version of an object, for a write that must not race: its etag and generation."""

    e_tag: str | None
    version: str | None

    def mode(self) -> dict[str, str]:
        """obstore's ``UpdateVersion``: the fields the store gave."""
        return {k: v for k, v in (("e_tag", self.e_tag), ("version", self.version)) if v is not None}


def create_if_absent(location: Location, data: bytes) -> bool:
    """Create an object only if none is there (a conditional PUT); False if one was."""
    return put_if(location, data, None) is not None


def put_if(location: Location, data: bytes, expected: Version | None) -> Version | None:
    """Write ``data`` if nothing is there (``expected`` None) or if the object is still ``expected``.

    The new version, or None when the condition failed (another writer got there first).
    """
    if FAMILIES.get(location.scheme) is None:
        return _fsspec_create(location, data) if expected is None else None
    import obstore
    from obstore.exceptions import AlreadyExistsError, NotFoundError, PreconditionError

    client, key = _client(location)
    try:
        got = obstore.put(client, key, data, mode="create" if expected is None else expected.mode())  # type: ignore[arg-type]
    except (AlreadyExistsError, PreconditionError, NotFoundError):
        return None
    except Exception as exc:  # obstore's errors are no OSError; callers catch OSError
        raise _os_error(exc, f"cannot write {location.uri}") from exc
    return Version(got.get("e_tag"), got.get("version"))


def read_versioned(location: Location) -> tuple[bytes, Version, float] | None:
    """An object's bytes, version and last-modified time (the store's clock, epoch seconds); None if absent."""
    import obstore
    from obstore.exceptions import NotFoundError

    client, key = _client(location)
    try:
        got = obstore.get(client, key)
        data = bytes(got.bytes())
    except NotFoundError:
        return None
    except Exception as exc:
        raise _os_error(exc, f"cannot read {location.uri}") from exc
    meta = got.meta
    return data, Version(meta.get("e_tag"), meta.get("version")), meta["last_modified"].timestamp()


def delete_if(location: Location, expected: Version) -> bool:
    """Delete an object if it is still ``expected`` (checked, then deleted: the gap is one round trip)."""
    import obstore
    from obstore.exceptions import NotFoundError

    client, key = _client(location)
    try:
        meta = obstore.head(client, key)
        if (meta.get("e_tag"), meta.get("version")) != (expected.e_tag, expected.version):
            return False
        obstore.delete(client, key)
    except NotFoundError:
        return False
    except Exception as exc:
        raise _os_error(exc, f"cannot delete {location.uri}") from exc
    return True


def _fsspec_create(location: Location, data: bytes) -> Version | None:
    handler = getattr(location.fs, "handler", None)
    fs = getattr(handler, "fs", None)
    if fs is None:
        msg = f"{location.uri}: this store offers no conditional write"
        raise OSError(msg)
    try:
        with fs.open(location.path, "xb") as fh:
            fh.write(data)
    except FileExistsError:
        return None
    except (ValueError, NotImplementedError, TypeError) as exc:
        msg = (
            f"{location.uri}: {location.scheme}:// offers no conditional write (create only if absent), so two "
            "runs could not be kept apart; write the output to s3://, gs://, abfs:// or a local path"
        )
        raise OSError(msg) from exc
    return Version(None, None)
