"""RFC 9162 Merkle trees: hashing, roots, inclusion and consistency proofs, and their verification.

Pure functions, no I/O. Hashing follows RFC 9162 §2.1.1 (SHA-256 with domain separation:
``0x00`` before a leaf, ``0x01`` before two child hashes).

Proofs are planned as a list of *ranges* of leaves (RFC 9162 §2.1.3.1 PATH and §2.1.4.1 SUBPROOF);
the hash of each range is folded from the O(log n) complete subtrees that tile it. A complete
subtree is a :data:`Node` ``(level, index)``: leaves ``[index << level, (index + 1) << level)``.
The same plan serves an in-memory list of leaf hashes (the functions named in the public contract)
and a stored log, which answers node lookups from its tiles (see :mod:`verinfer.log`) instead of
rehashing subtrees.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

from verinfer.errors import InputError, VerificationError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "LEAF_PREFIX",
    "NODE_PREFIX",
    "Node",
    "NodeReader",
    "consistency_proof",
    "consistency_proof_from",
    "edge_root",
    "extend",
    "fold_right",
    "inclusion_inner",
    "inclusion_proof",
    "inclusion_proof_from",
    "inclusion_tail",
    "leaf_hash",
    "leaf_hashes",
    "node_hash",
    "range_nodes",
    "root",
    "root_from",
    "verify_consistency",
    "verify_inclusion",
]

LEAF_PREFIX = b"\x00"  # RFC 9162 §2.1.1: MTH({d(0)}) = SHA-256(0x00 || d(0))
NODE_PREFIX = b"\x01"  # RFC 9162 §2.1.1: MTH(D[n]) = SHA-256(0x01 || MTH(left) || MTH(right))
HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 9162 §2.1.1: the hash of an empty list

Node = tuple[int, int]
"""A complete subtree ``(level, index)``: leaves ``[index << level, (index + 1) << level)``."""

NodeReader = Callable[[Sequence[Node]], Sequence[bytes]]
"""Returns the hashes of the given complete subtrees, in order."""

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """The RFC 9162 hash of a leaf holding ``data``."""
    return _sha256(LEAF_PREFIX + data).digest()


def leaf_hashes(entries: Iterable[bytes]) -> list[bytes]:
    """The leaf hashes of ``entries`` (the batch form of :func:`leaf_hash`)."""
    sha256, prefix = _sha256, LEAF_PREFIX
    return [sha256(prefix + data).digest() for data in entries]


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 9162 hash of an interior node with children ``left`` and ``right``."""
    return _sha256(NODE_PREFIX + left + right).digest()


# ---------------------------------------------------------------------------------------------
# Planning: which ranges of leaves a proof consists of, and which complete subtrees tile them.


def _split(width: int) -> int:
    """The largest power of two strictly smaller than ``width`` (RFC 9162's k), for width >= 2."""
    return 1 << ((width - 1).bit_length() - 1)


def range_nodes(start: int, end: int) -> list[Node]:
    """The complete subtrees that tile leaves ``[start, end)``, left to right.

    For the ranges that occur in RFC 9162 trees (``start`` aligned to the largest power of two not
    above the width) these descend in size, and the range's hash is their right fold.
    """
    width = end - start
    if width > 0 and width & (width - 1) == 0 and start & (width - 1) == 0:
        level = width.bit_length() - 1  # the common case: one complete subtree
        return [(level, start >> level)]
    nodes: list[Node] = []
    while start < end:
        level = (end - start).bit_length() - 1
        while start & ((1 << level) - 1):
            level -= 1
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def inclusion_inner(index: int, size: int) -> int:
    """How many levels up leaf ``index`` and the last leaf of a tree of ``size`` leaves part.

    Below level ``inner - 1`` every node on an RFC 9162 inclusion path has a complete sibling
    ``(level, (index >> level) ^ 1)``; the rest of the path (:func:`inclusion_tail`) depends
    only on ``size`` and ``inner``.
    """
    return (index ^ (size - 1)).bit_length()


def inclusion_tail(size: int, inner: int) -> tuple[list[Node], list[Node]]:
    """The top of an inclusion path: ``(right, left)``, both lists of complete subtrees.

    ``right`` tiles the (possibly incomplete) right neighbour at level ``inner - 1``, the leaves
    ``[((size - 1) >> (inner - 1)) << (inner - 1), size)``; its proof entry is their right fold.
    ``left`` are the left siblings above, from the bottom up; each is one proof entry.
    """
    last = size - 1
    right = []
    if inner:
        level = inner - 1
        right = range_nodes((last >> level) << level, size)
    left = [(lvl, (last >> lvl) - 1) for lvl in range(inner, last.bit_length()) if last >> lvl & 1]
    return right, left


def fold_right(hashes: Sequence[bytes]) -> bytes:
    """The hash of a range from the complete subtrees that tile it, left to right."""
    acc = hashes[-1]
    for left in reversed(hashes[:-1]):
        acc = _sha256(NODE_PREFIX + left + acc).digest()
    return acc


def _consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """RFC 9162 §2.1.4.1 PROOF(size1, D[size2]) as ranges of leaves, from the bottom up."""
    ranges = []
    start, end, m, whole = 0, size2, size1, True
    while True:
        if m == end - start:
            if not whole:
                ranges.append((start, end))
            break
        k = _split(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            m -= k
            whole = False
    ranges.reverse()
    return ranges


def _hash_ranges(ranges: Sequence[tuple[int, int]], read: NodeReader) -> list[bytes]:
    """The hash of each range, reading every needed node in one call to ``read``."""
    plans = [range_nodes(start, end) for start, end in ranges]
    wanted = [node for plan in plans for node in plan]
    found = read(wanted)
    if len(found) != len(wanted):
        raise InputError(f"node reader returned {len(found)} hashes for {len(wanted)} nodes")
    out = []
    position = 0
    for plan in plans:
        out.append(fold_right(found[position : position + len(plan)]))
        position += len(plan)
    return out


def root_from(size: int, read: NodeReader) -> bytes:
    """The root of the tree of ``size`` leaves, from O(log size) stored nodes."""
    if size < 0:
        raise InputError(f"tree size must be >= 0, got {size!r}")
    if size == 0:
        return EMPTY_ROOT
    return _hash_ranges([(0, size)], read)[0]


def inclusion_proof_from(index: int, size: int, read: NodeReader) -> list[bytes]:
    """The RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
    if not 0 <= index < size:
        raise InputError(f"leaf index {index!r} is outside a tree of size {size!r}")
    inner = inclusion_inner(index, size)
    siblings = [(level, (index >> level) ^ 1) for level in range(inner - 1)]
    right, left = inclusion_tail(size, inner)
    wanted = siblings + right + left
    found = read(wanted)
    if len(found) != len(wanted):
        raise InputError(f"node reader returned {len(found)} hashes for {len(wanted)} nodes")
    if not right:
        return list(found)
    end = len(siblings) + len(right)
    return [*found[: len(siblings)], fold_right(found[len(siblings) : end]), *found[end:]]


def consistency_proof_from(size1: int, size2: int, read: NodeReader) -> list[bytes]:
    """The RFC 9162 consistency proof from the tree of ``size1`` leaves to that of ``size2``."""
    if not 0 <= size1 <= size2:
        raise InputError(f"consistency needs 0 <= size1 <= size2, got {size1!r} and {size2!r}")
    if size1 in (0, size2):
        return []
    return _hash_ranges(_consistency_ranges(size1, size2), read)


# ---------------------------------------------------------------------------------------------
# The same, over an in-memory list of leaf hashes (the public contract).


def _list_reader(leaf_hashes: Sequence[bytes]) -> NodeReader:
    for position, value in enumerate(leaf_hashes):
        if not isinstance(value, bytes) or len(value) != HASH_SIZE:
            raise InputError(f"leaf hash {position} must be {HASH_SIZE} bytes, got {value!r}")

    def subtree(level: int, index: int) -> bytes:
        row = list(leaf_hashes[index << level : (index + 1) << level])
        if len(row) != 1 << level:
            raise InputError(f"subtree ({level}, {index}) is not complete")
        while len(row) > 1:
            row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row), 2)]
        return row[0]

    return lambda nodes: [subtree(level, index) for level, index in nodes]


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """The root of the tree whose leaves hash to ``leaf_hashes``."""
    return root_from(len(leaf_hashes), _list_reader(leaf_hashes))


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """The inclusion proof of leaf ``index`` in the tree of ``leaf_hashes``."""
    return inclusion_proof_from(index, len(leaf_hashes), _list_reader(leaf_hashes))


def root_and_paths(leaf_hashes: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root of the tree of ``leaf_hashes`` and every leaf's inclusion proof in it, with
    ``len - 1`` node hashes in all (a signer of a small batch proves each leaf in it)."""
    if not leaf_hashes:
        raise InputError("a tree needs at least one leaf")
    if len(leaf_hashes) == 1:
        return leaf_hashes[0], [[]]
    middle = _split(len(leaf_hashes))
    left, left_paths = root_and_paths(leaf_hashes[:middle])
    right, right_paths = root_and_paths(leaf_hashes[middle:])
    for path in left_paths:
        path.append(right)
    for path in right_paths:
        path.append(left)
    return node_hash(left, right), left_paths + right_paths


def consistency_proof(size1: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """The consistency proof from the first ``size1`` leaves to all of ``leaf_hashes``."""
    return consistency_proof_from(size1, len(leaf_hashes), _list_reader(leaf_hashes))


# ---------------------------------------------------------------------------------------------
# Appending: the right edge of a tree and the nodes a batch of leaves creates.


def extend(
    size: int, edge: Mapping[int, bytes], leaf_hashes: Sequence[bytes]
) -> tuple[dict[int, bytes], list[list[bytes]]]:
    """Append ``leaf_hashes`` to a tree of ``size`` leaves.

    ``edge`` maps each set bit ``level`` of ``size`` to the hash of the complete subtree
    ``(level, (size >> level) - 1)``: the compact right edge that is all an appender needs.
    Returns the new edge and, per level, the hashes of the nodes that became complete, in index
    order; at level ``l`` they are the nodes ``size >> l`` up to ``(new size >> l) - 1``.
    """
    new_size = size + len(leaf_hashes)
    created: list[list[bytes]] = [list(leaf_hashes)]
    level = 1
    sha256 = _sha256
    while (new_size >> level) > (size >> level):
        below = created[level - 1]
        if (size >> (level - 1)) & 1:  # the last node below was waiting for a right sibling
            below = [edge[level - 1], *below]
        count = (new_size >> level) - (size >> level)
        created.append(
            [sha256(NODE_PREFIX + below[2 * i] + below[2 * i + 1]).digest() for i in range(count)]
        )
        level += 1
    new_edge = {}
    for lvl in range(new_size.bit_length()):
        if (new_size >> lvl) & 1:
            position = (new_size >> lvl) - 1 - (size >> lvl)
            new_edge[lvl] = created[lvl][position] if position >= 0 else edge[lvl]
    return new_edge, created


def edge_root(size: int, edge: Mapping[int, bytes]) -> bytes:
    """The root of a tree of ``size`` leaves from its right edge (see :func:`extend`)."""
    acc: bytes | None = None
    for level in range(size.bit_length()):
        if (size >> level) & 1:
            acc = edge[level] if acc is None else _sha256(NODE_PREFIX + edge[level] + acc).digest()
    return EMPTY_ROOT if acc is None else acc


# ---------------------------------------------------------------------------------------------
# Verification (RFC 9162 §2.1.3.2 and §2.1.4.2). Return None or raise VerificationError.


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise VerificationError(f"{what} must be {HASH_SIZE} bytes, got {value!r}")


def _check_proof(proof: Sequence[bytes]) -> None:
    if not isinstance(proof, list | tuple):
        raise VerificationError(f"a proof is a list of hashes, got {type(proof).__name__}")
    for element in proof:
        if type(element) is not bytes or len(element) != HASH_SIZE:
            raise VerificationError(f"proof hash must be {HASH_SIZE} bytes, got {element!r}")


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves with ``root``.

    Note that the size itself is authenticated by the checkpoint that signs it together with the
    root, not by this proof: see docs/PROTOCOL.md, "What an inclusion proof does not say".
    """
    _check_hash(leaf_hash, "leaf hash")
    _check_hash(root, "root")
    if not isinstance(proof, list | tuple):
        raise VerificationError(f"a proof is a list of hashes, got {type(proof).__name__}")
    if not 0 <= index < size:
        raise VerificationError(f"leaf index {index!r} is outside a tree of size {size!r}")
    fn, sn = index, size - 1
    acc = leaf_hash
    sha256 = _sha256
    for element in proof:  # each element is checked as it is used (one pass: this is hot)
        if type(element) is not bytes or len(element) != HASH_SIZE:
            raise VerificationError(f"proof hash must be {HASH_SIZE} bytes, got {element!r}")
        if sn == 0:
            raise VerificationError(f"inclusion proof too long: {len(proof)} hashes")
        if fn & 1 or fn == sn:
            acc = sha256(NODE_PREFIX + element + acc).digest()
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            acc = sha256(NODE_PREFIX + acc + element).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError(f"inclusion proof too short: {len(proof)} hashes")
    if acc != root:
        raise VerificationError(
            f"inclusion proof of leaf {index} in tree of size {size} leads to root "
            f"{acc.hex()}, expected {root.hex()}"
        )


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``size1`` leaves with ``root1`` is a prefix of ``size2``/``root2``."""
    _check_hash(root1, "root1")
    _check_hash(root2, "root2")
    _check_proof(proof)
    if not 0 <= size1 <= size2:
        raise VerificationError(f"consistency needs 0 <= size1 <= size2, got {size1}, {size2}")
    if size1 in (0, size2):
        if proof:
            raise VerificationError(f"consistency proof must be empty, got {len(proof)} hashes")
        if size1 == size2 and root1 != root2:
            raise VerificationError(f"two different roots for one tree size {size1}")
        if size1 == 0 and root1 != EMPTY_ROOT:
            raise VerificationError(f"root of the empty tree must be {EMPTY_ROOT.hex()}")
        return
    if not proof:
        raise VerificationError("consistency proof is empty")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # (1) size1 is a power of two: its root is the first node
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:  # (2) skip the levels where the old tree's last node is a right child
        fn >>= 1
        sn >>= 1
    first = second = path[0]
    sha256 = _sha256
    for element in path[1:]:
        if sn == 0:
            raise VerificationError(f"consistency proof too long: {len(proof)} hashes")
        if fn & 1 or fn == sn:
            first = sha256(NODE_PREFIX + element + first).digest()
            second = sha256(NODE_PREFIX + element + second).digest()
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            second = sha256(NODE_PREFIX + second + element).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError(f"consistency proof too short: {len(proof)} hashes")
    if first != root1:
        raise VerificationError(
            f"consistency proof leads to old root {first.hex()}, expected {root1.hex()}"
        )
    if second != root2:
        raise VerificationError(
            f"consistency proof leads to new root {second.hex()}, expected {root2.hex()}"
        )
