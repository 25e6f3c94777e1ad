"""Verification modes beyond a signed receipt: disputes (:mod:`verinfer.modes.dispute`)."""
