"""What every verification mode is: a parsed mode string that knows its own evidence, how that
evidence is checked offline, and what a node must do to answer in it. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from verinfer.errors import VerificationError

if TYPE_CHECKING:
    from verinfer.verify.bundle import Bundle
    from verinfer.verify.trust import TrustRoot

__all__ = ["NO_EVIDENCE", "Claims", "Context", "Evidence", "Mode"]

Report = Callable[[str], None]


class Evidence:
    """What a bundle carries beyond its receipt and inclusion proof, for its mode (the bundle's
    ``evidence`` object in JSON). The base class is "nothing": ``{}``."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object form."""
        return {}


NO_EVIDENCE = Evidence()


@dataclass(frozen=True)
class Claims:
    """What the caller holds and wants checked against a receipt: the tensors and the model
    bytes (each optional), and the circuit materials by CID (zk)."""

    inputs: Mapping[str, np.ndarray] | None = None
    outputs: Mapping[str, np.ndarray] | None = None
    model: bytes | None = None
    materials: Mapping[str, bytes] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Mode:
    """One verification mode, parsed from its text (``attested``, ``replicated:3``, ...).

    A subclass lives in its own module of :mod:`verinfer.modes` and is listed in
    :data:`verinfer.modes.FAMILY`; the rest of verinfer asks the mode instead of comparing
    mode strings."""

    text: str
    syntax: ClassVar[str]  # how the family is written, for messages: "replicated:K"
    rerun_judged: ClassVar[bool] = False  # an answer is judged by someone re-running the model
    proven: ClassVar[bool] = False  # the answer carries a proof the node takes long to make
    # a text generation or embedding may be answered in it (generation receipts: PROTOCOL §16)
    serves_text: ClassVar[bool] = False

    @classmethod
    def parse(cls, text: str, *, receipt: bool) -> Mode | None:
        """This family's mode for ``text``, or ``None`` if ``text`` is not of this family;
        :class:`~verinfer.errors.InputError` if it is, but malformed. ``receipt``: as a receipt
        states it (every parameter explicit), else as a request may say it."""
        return cls(text) if text == cls.syntax else None

    @property
    def nodes(self) -> int:
        """How many distinct nodes answer a request in this mode."""
        return 1

    @property
    def window(self) -> int | None:
        """The challenge window in seconds (``optimistic``), else ``None``."""
        return None

    def stated(self, default_window: int) -> str:
        """What a node's receipt states for a request in this mode."""
        return self.text

    def answers(self, stated: Mode) -> bool:
        """Whether a receipt stating ``stated`` answers a request for this mode."""
        return stated.text == self.text

    def evidence(self, value: object, *, replica: bool) -> Evidence:
        """Parse the bundle's ``evidence`` object; :class:`VerificationError` naming what is
        malformed. ``replica``: one node's own bundle of a several-node request."""
        if value != {}:
            what = "a replica" if replica else self.text
            raise VerificationError(f"malformed bundle: evidence must be empty for {what}")
        return NO_EVIDENCE

    def check_evidence(self, bundle: Bundle, trusted: list[str], say: Report) -> None:
        """Step 2+, after inclusion: what the evidence proves on its own. By default the mode
        has none, and a bundle built to carry some is refused: nothing unchecked rides along."""
        _evidence_is(bundle, self, type(NO_EVIDENCE))

    def complete(self, bundle: Bundle) -> bool:
        """Whether ``bundle`` carries all the evidence its mode asks of an answer (a replicated
        answer: every other node's bundle), not just one node's part of it."""
        return True

    def check_claims(self, bundle: Bundle, claims: Claims, context: Context) -> None:
        """Step 7, after the claims are matched to the receipt: a proof about them (none by
        default)."""


def encodable(text: str) -> bool:
    """Whether ``text`` is valid Unicode (no lone surrogates), so it has UTF-8 bytes."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _evidence_is(bundle: Bundle, mode: Mode, *kinds: type[Evidence]) -> None:
    """Refuse evidence of a kind ``mode`` does not have (a bundle built, not parsed)."""
    if type(bundle.evidence) not in kinds:
        raise VerificationError(
            f"step 2+ (evidence): a {mode.text} bundle cannot carry "
            f"{type(bundle.evidence).__name__} evidence"
        )


@dataclass(frozen=True)
class Context:
    """What a mode's checks may consult: the caller's trust root, whether the policy accepts a
    locally made zk setup (:class:`~verinfer.verify.UnsafeLocalSrs`), and the report."""

    trust: TrustRoot
    say: Report
    insecure_srs: bool = False
