"""Offline verification: receipts, proof bundles and the verifier. Needs no node and no network."""

from verinfer.verify.bundle import BUNDLE_TYPE, MODES, RECEIPT_TYPE, Bundle, Receipt, replicas_of
from verinfer.verify.verifier import Report, verify_bundle, verify_bundles

__all__ = [
    "BUNDLE_TYPE",
    "MODES",
    "RECEIPT_TYPE",
    "Bundle",
    "Receipt",
    "Report",
    "replicas_of",
    "verify_bundle",
    "verify_bundles",
]
