"""What the batch package's modules share: the out folder's layout, atomic JSON, a few
constants."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

#: Event rows gathered into one float32 block before the decayed means (bounds that copy).
GATHER_ROWS = 65_536
#: Rejected rows shown in the summary (all of them are in rejected.parquet).
MAX_EXAMPLES = 20
#: Reason of the rows of a user whose every event has weight 0 (found while scoring a chunk).
REASON_ZERO_WEIGHT = "every event of the user has weight 0"
#: File written last by a finished staging pass, in the staging folder.
COMPLETE_MARKER = "_COMPLETE.json"


def staging_dir(out: Path) -> Path:
    """The job's staging folder ``OUT/_staging`` (removed when the job finishes)."""
    return out / "_staging"


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON to a temp file beside ``path``, fsync, rename over it."""
    from ..io import atomic_open

    with atomic_open(path, "w") as fh:
        json.dump(obj, fh, indent=1, ensure_ascii=False, default=_json_default)


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def py_scalar(x):
    """A numpy scalar as the Python scalar (for JSON); anything else unchanged."""
    return x.item() if isinstance(x, np.generic) else x


def is_int_index(idx: pd.Index) -> bool:
    """Whether ``idx`` holds integer ids (else strings)."""
    return pd.api.types.is_integer_dtype(idx.dtype)
