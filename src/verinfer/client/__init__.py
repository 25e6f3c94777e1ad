"""The Python SDK: call a node over HTTP and get answers that were verified before you see them.

``Client.infer`` checks every bundle against the node keys it trusts (given explicitly, or
recorded on first use in ``$VERINFER_HOME/known_nodes.json``), that the receipt carries the
nonce it sent, and that the model is the one asked for: a CID by its content, a name
(``owner/name[@version|tag]``) by the owner's signed history, verified under a publisher key the
client trusts for that owner (:class:`Publishers`: given explicitly, or pinned on first use in
``known_publishers.json``). A user never receives an unverified answer by accident.

Every call is written once, as a flow in :mod:`verinfer.client._core` that yields requests and
receives responses; :class:`Client` and :class:`AsyncClient` only drive those flows, so they make
the same decisions. :class:`Network` and :class:`AsyncNetwork` spread calls over a network
file's nodes (fail-over, replicated agreement), deciding once in a shared base.

Layout: ``_core`` (flows, no network I/O), ``_trust`` (node and publisher pins), ``_sync`` and
``_async`` (the drivers), ``_network`` (fail-over and replicated agreement). The underscored
modules are internal; import from ``verinfer.client``.
"""

import time  # noqa: F401 - tests patch verinfer.client.time.sleep, the sync driver's sleep

from verinfer.client._async import AsyncClient
from verinfer.client._core import BrokenPromiseError, NetworkError, Result
from verinfer.client._network import AsyncNetwork, Network, connect
from verinfer.client._sync import Client
from verinfer.client._text import ChatResult, EmbedResult
from verinfer.client._trust import NodeKeys, Publishers, StaleHistory

__all__ = [
    "AsyncClient",
    "AsyncNetwork",
    "BrokenPromiseError",
    "ChatResult",
    "Client",
    "EmbedResult",
    "Network",
    "NetworkError",
    "NodeKeys",
    "Publishers",
    "Result",
    "StaleHistory",
    "connect",
]
