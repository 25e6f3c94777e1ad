"""Offline verification: receipts, proof bundles and the verifier. Needs no node and no network."""

from verinfer.verify.bundle import (
    BUNDLE_TYPE,
    MODES,
    RECEIPT_TYPE,
    Bundle,
    Receipt,
    mode_matches,
    replicas_of,
    window_of,
)
from verinfer.verify.verifier import Report, verify_bundle, verify_bundles

__all__ = [
    "BUNDLE_TYPE",
    "MODES",
    "RECEIPT_TYPE",
    "Bundle",
    "Receipt",
    "Report",
    "mode_matches",
    "replicas_of",
    "verify_bundle",
    "verify_bundles",
    "window_of",
]
