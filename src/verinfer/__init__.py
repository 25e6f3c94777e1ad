"""verinfer: verifiable inference over a network of independent nodes.

The pure core (:mod:`verinfer.cid`, :mod:`verinfer.canonical`, :mod:`verinfer.merkle`,
:mod:`verinfer.note`) does no I/O and can be embedded in any verifier. :mod:`verinfer.log` is the
persistent transparency log built on it.
"""

from verinfer import canonical, cid, errors, merkle, note
from verinfer.errors import Error, VerificationError

__version__ = "0.1.0"

__all__ = [
    "Error",
    "VerificationError",
    "__version__",
    "canonical",
    "cid",
    "errors",
    "merkle",
    "note",
]
