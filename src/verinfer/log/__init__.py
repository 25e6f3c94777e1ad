"""The transparency log: an append-only RFC 9162 Merkle tree with signed C2SP checkpoints.

``Log.open(location, signer)`` opens a log in a data directory (SQLite, the embedded default) or
in PostgreSQL (a ``postgresql://`` URL); both back ends share one code path behind
:class:`~verinfer.log.store.Store`.
"""

from verinfer.log.core import MAX_ENTRY_BYTES, Appended, Log, open_store
from verinfer.log.store import Store

__all__ = ["MAX_ENTRY_BYTES", "Appended", "Log", "Store", "open_store"]
