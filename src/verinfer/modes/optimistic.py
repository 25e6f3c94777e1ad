"""``optimistic:S``: one node's answer, open to challenge for S seconds; a challenge is settled
by the dispute game (:mod:`verinfer.modes.dispute`), which re-runs one operator."""

from __future__ import annotations

import re
from dataclasses import dataclass

from verinfer.errors import InputError
from verinfer.modes._base import Mode

__all__ = ["MAX_WINDOW", "Optimistic"]

MAX_WINDOW = 365 * 86400
_OPTIMISTIC = re.compile(r"optimistic(?::([1-9][0-9]{1,7}))?")


@dataclass(frozen=True)
class Optimistic(Mode):
    """``optimistic`` (a request: the node's default window) or ``optimistic:S``."""

    syntax = "optimistic[:S]"
    rerun_judged = True  # a dispute re-runs one operator of the model

    @classmethod
    def parse(cls, text: str, *, receipt: bool) -> Mode | None:
        found = _OPTIMISTIC.fullmatch(text)
        if found is None:
            return None
        if found.group(1) is None:
            if receipt:
                raise InputError("an optimistic receipt must state its window: optimistic:SECONDS")
            return cls(text)
        seconds = int(found.group(1))
        if seconds > MAX_WINDOW:
            raise InputError(f"challenge window {seconds} s is longer than {MAX_WINDOW} s")
        return cls(text)

    @property
    def window(self) -> int:
        """The stated window in seconds; 0 for a request that leaves it to the node."""
        _, _, seconds = self.text.partition(":")
        return int(seconds) if seconds else 0

    def stated(self, default_window: int) -> str:
        return self.text if self.window else f"optimistic:{default_window}"

    def answers(self, stated: Mode) -> bool:
        return stated.text == self.text or (self.window == 0 and isinstance(stated, Optimistic))
