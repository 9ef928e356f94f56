"""Object stores behind :mod:`batchscore.storage`: URIs to pyarrow filesystems, and conditional writes.

Loaded only when a run names a ``scheme://`` location other than ``file://``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs

if TYPE_CHECKING:
    from batchscore.storage import Location


def resolve(uri: str, options: dict[str, Any]) -> Location:
    """A location on the object store a URI names, configured by pyarrow's own option names."""
    from batchscore.storage import Location

    scheme = uri.split("://", 1)[0].lower()
    fs, path = pafs.FileSystem.from_uri(uri)
    if options and scheme == "s3":
        fs = pafs.S3FileSystem(**options)
    return Location(fs, path.rstrip("/"), scheme)


def create_if_absent(location: Location, data: bytes) -> bool:
    """Create an object only if none is there (a conditional PUT); False if one was."""
    msg = f"conditional writes are not supported yet on {location.scheme}://"
    raise NotImplementedError(msg)
