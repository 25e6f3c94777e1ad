"""The options both clients take, turned into one :class:`~verinfer.client._core.Core`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from verinfer.client._core import Core
from verinfer.client._trust import NodeKeys, Notify, Publishers
from verinfer.errors import InputError
from verinfer.verify.trust import TrustRoot

__all__ = ["PublisherTrust", "make_core"]

PublisherTrust = Iterable[str] | Mapping[str, Iterable[str]] | Publishers
"""Publisher keys: vkeys (each key's name is its owner), owner -> vkeys, or a shared policy."""


def publishers_of(
    trusted: PublisherTrust,
    known: str | os.PathLike[str] | None,
    notify: Notify | None,
    known_nodes: str | os.PathLike[str] | None,
) -> Publishers:
    """The publisher policy of a client: the object given, or one made from the options (the
    pin file beside ``known_nodes`` when that is given, else in ``$VERINFER_HOME``)."""
    if isinstance(trusted, Publishers):
        if known is not None or notify is not None:
            raise InputError("give known_publishers= and on_pin= to the Publishers object itself")
        return trusted
    if known is None and known_nodes is not None:
        keys = trusted if isinstance(trusted, Mapping) else list(trusted)
        if not keys:
            known = Path(known_nodes).with_name("known_publishers.json")
        trusted = keys
    return Publishers(trusted, known=known, notify=notify)


def make_core(
    url: str,
    *,
    trusted_vkeys: Iterable[str] | None,
    known_nodes: str | os.PathLike[str] | None,
    trusted_publishers: PublisherTrust,
    known_publishers: str | os.PathLike[str] | None,
    on_pin: Notify | None,
    retries: int,
    admin_token: str | None,
    trusted_srs: Iterable[str],
    allow_insecure_srs: bool,
    timeout: float,
    trust: TrustRoot | None = None,
) -> Core:
    """One client's state and flows. A :class:`~verinfer.verify.TrustRoot` supplies the node
    keys, publisher keys and SRS not given one by one."""
    if trust is not None:
        if trusted_vkeys is None:
            if not trust.nodes:  # a root that trusts no node must not fall back to first use
                raise InputError("the trust root lists no node keys")
            trusted_vkeys = trust.nodes
        if not trusted_publishers and trust.publishers:
            trusted_publishers = trust.publishers
        trusted_srs = [*trusted_srs, *trust.srs]
    return Core(
        url,
        nodes=NodeKeys(trusted_vkeys, known_nodes),
        publishers=publishers_of(trusted_publishers, known_publishers, on_pin, known_nodes),
        retries=retries,
        admin_token=admin_token,
        trusted_srs=trusted_srs,
        allow_insecure_srs=allow_insecure_srs,
        timeout=timeout,
    )
