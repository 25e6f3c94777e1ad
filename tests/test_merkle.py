"""RFC 9162 Merkle trees: vectors, properties against a naive reference, and proof mutations.

The reference below is written straight from RFC 9162 §2.1 (MTH, PATH, PROOF/SUBPROOF over
lists) with nothing shared with :mod:`verinfer.merkle` but SHA-256.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vectors import load_vectors

from verinfer import merkle
from verinfer.errors import InputError, VerificationError

VECTORS = load_vectors("rfc9162_merkle.json")


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# ---------------------------------------------------------------------------------------------
# The naive reference (RFC 9162 §2.1), over lists of leaf hashes.


def _k(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def ref_mth(d: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of a list of leaf hashes (§2.1.1)."""
    n = len(d)
    if n == 0:
        return _sha256(b"")
    if n == 1:
        return d[0]
    k = _k(n)
    return _sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) (§2.1.3.1)."""
    n = len(d)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) (§2.1.4.1); the RFC leaves m = 0 undefined, and it needs no hashes."""
    return [] if m == 0 else _ref_subproof(m, d, True)


def _ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*_ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*_ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def inclusion_shape(index: int, size: int) -> tuple[str, ...]:
    """The side of each audit-path sibling, leaf first: all an RFC 9162 verifier can see of
    ``(index, size)``. Two statements with one shape check the same hashes the same way."""
    if size == 1:
        return ()
    k = _k(size)
    if index < k:
        return (*inclusion_shape(index, k), "right")
    return (*inclusion_shape(index - k, size - k), "left")


def consistency_shape(size1: int, size2: int) -> tuple[str, ...]:
    """The same for a consistency proof: the SUBPROOF steps, and whether the old subtree's hash
    is a proof element (it is not when it is the old root itself)."""
    if size1 == 0:
        return ("empty old tree",)
    return _subproof_shape(size1, size2, True)


def _subproof_shape(m: int, n: int, whole: bool) -> tuple[str, ...]:
    if m == n:
        return () if whole else ("old subtree",)
    k = _k(n)
    if m <= k:
        return (*_subproof_shape(m, k, whole), "right")
    return (*_subproof_shape(m - k, n - k, False), "left")


# A cached list of distinct leaf hashes: every tree in this file is a prefix of it.
LEAVES = [_sha256(b"\x00" + i.to_bytes(4, "big")) for i in range(1 << 13)]


@functools.cache
def ref_root(size: int) -> bytes:
    return ref_mth(LEAVES[:size])


def test_reference_split_is_the_largest_power_of_two_below_n() -> None:
    for n in range(2, 5000):
        assert _k(n) < n <= 2 * _k(n)
        assert _k(n).bit_count() == 1


def test_reference_agrees_with_the_vectors() -> None:
    leaves = [bytes.fromhex(h) for h in VECTORS["leaf_hashes"]]
    for size, expected in VECTORS["roots"].items():
        assert ref_mth(leaves[: int(size)]).hex() == expected
    for v in VECTORS["inclusion"]:
        assert [p.hex() for p in ref_path(v["index"], leaves[: v["size"]])] == v["proof"]
    for v in VECTORS["consistency"]:
        assert [p.hex() for p in ref_proof(v["size1"], leaves[: v["size2"]])] == v["proof"]


# ---------------------------------------------------------------------------------------------
# (a) The RFC 9162 vectors (transparency-dev/merkle), through the public names.

VECTOR_LEAVES = [bytes.fromhex(h) for h in VECTORS["leaf_hashes"]]


def test_hashing_constants_follow_rfc9162() -> None:
    assert _sha256(b"") == merkle.EMPTY_ROOT
    assert merkle.LEAF_PREFIX == b"\x00"
    assert merkle.NODE_PREFIX == b"\x01"
    assert merkle.node_hash(LEAVES[0], LEAVES[1]) == _sha256(b"\x01" + LEAVES[0] + LEAVES[1])


@pytest.mark.parametrize("position", range(len(VECTORS["leaf_inputs"])))
def test_leaf_hash_matches_every_vector(position: int) -> None:
    data = bytes.fromhex(VECTORS["leaf_inputs"][position])
    assert merkle.leaf_hash(data).hex() == VECTORS["leaf_hashes"][position]


@pytest.mark.parametrize("size", sorted(int(s) for s in VECTORS["roots"]))
def test_root_matches_every_vector_size(size: int) -> None:
    assert merkle.root(VECTOR_LEAVES[:size]).hex() == VECTORS["roots"][str(size)]


@pytest.mark.parametrize(
    "vector", VECTORS["inclusion"], ids=lambda v: f"leaf{v['index']}-of-{v['size']}"
)
def test_inclusion_proof_matches_every_vector(vector: dict) -> None:
    index, size = vector["index"], vector["size"]
    proof = merkle.inclusion_proof(index, VECTOR_LEAVES[:size])
    assert [p.hex() for p in proof] == vector["proof"]
    root = bytes.fromhex(VECTORS["roots"][str(size)])
    assert merkle.verify_inclusion(VECTOR_LEAVES[index], index, size, proof, root) is None


@pytest.mark.parametrize(
    "vector", VECTORS["consistency"], ids=lambda v: f"{v['size1']}-to-{v['size2']}"
)
def test_consistency_proof_matches_every_vector(vector: dict) -> None:
    size1, size2 = vector["size1"], vector["size2"]
    proof = merkle.consistency_proof(size1, VECTOR_LEAVES[:size2])
    assert [p.hex() for p in proof] == vector["proof"]
    root1 = bytes.fromhex(VECTORS["roots"][str(size1)])
    root2 = bytes.fromhex(VECTORS["roots"][str(size2)])
    assert merkle.verify_consistency(size1, size2, root1, root2, proof) is None


# ---------------------------------------------------------------------------------------------
# (b) Properties against the reference, for trees of up to a few thousand leaves.

_sizes = st.integers(1, 70) | st.integers(1, 3000)


@settings(max_examples=150, deadline=None)
@given(size=st.integers(0, 70) | st.integers(0, 3000))
def test_root_equals_reference(size: int) -> None:
    assert merkle.root(LEAVES[:size]) == ref_root(size)


@settings(max_examples=150, deadline=None)
@given(size=_sizes, data=st.data())
def test_inclusion_proof_equals_reference_and_verifies(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = merkle.inclusion_proof(index, LEAVES[:size])
    assert proof == ref_path(index, LEAVES[:size])
    merkle.verify_inclusion(LEAVES[index], index, size, proof, ref_root(size))


@settings(max_examples=150, deadline=None)
@given(size2=_sizes, data=st.data())
def test_consistency_proof_equals_reference_and_verifies(size2: int, data: st.DataObject) -> None:
    size1 = data.draw(st.integers(0, size2), label="size1")
    proof = merkle.consistency_proof(size1, LEAVES[:size2])
    assert proof == ref_proof(size1, LEAVES[:size2])
    merkle.verify_consistency(size1, size2, ref_root(size1), ref_root(size2), proof)


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.integers(0, 70) | st.integers(0, 400), max_size=12))
def test_extend_over_random_batches_equals_root_of_the_concatenation(batches: list[int]) -> None:
    size, edge = 0, {}
    assert merkle.edge_root(0, edge) == merkle.EMPTY_ROOT
    for count in batches:
        new_size = size + count
        edge, created = merkle.extend(size, edge, LEAVES[size:new_size])
        assert merkle.edge_root(new_size, edge) == ref_root(new_size)
        assert merkle.root(LEAVES[:new_size]) == ref_root(new_size)
        # the edge holds, per set bit of the size, the last complete subtree at that level
        assert set(edge) == {lvl for lvl in range(new_size.bit_length()) if new_size >> lvl & 1}
        for lvl, node in edge.items():
            index = (new_size >> lvl) - 1
            assert node == ref_mth(LEAVES[index << lvl : (index + 1) << lvl])
        # the batch completed exactly the nodes size >> l .. (new_size >> l) - 1 at each level l
        for lvl, nodes in enumerate(created):
            first = size >> lvl
            assert len(nodes) == (new_size >> lvl) - first
            for offset, node in enumerate(nodes):
                index = first + offset
                assert node == ref_mth(LEAVES[index << lvl : (index + 1) << lvl])
        assert all(created[1:]), "a level above the leaves with no new node"
        size = new_size


class CountingReader:
    """A node reader over the reference that records every call and checks every node asked for
    is a distinct complete subtree inside the tree."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls: list[list[merkle.Node]] = []

    def __call__(self, nodes: Sequence[merkle.Node]) -> list[bytes]:
        nodes = list(nodes)
        self.calls.append(nodes)
        assert len(set(nodes)) == len(nodes), f"node read twice in one call: {nodes}"
        for level, index in nodes:
            assert level >= 0
            assert index >= 0
            assert (index + 1) << level <= self.size, f"node {(level, index)} outside the tree"
        return [ref_mth(LEAVES[index << level : (index + 1) << level]) for level, index in nodes]

    @property
    def node_count(self) -> int:
        return sum(len(call) for call in self.calls)


@settings(max_examples=150, deadline=None)
@given(size=st.integers(0, 70) | st.integers(0, 3000))
def test_root_from_reads_one_node_per_set_bit_of_the_size(size: int) -> None:
    reader = CountingReader(size)
    assert merkle.root_from(size, reader) == ref_root(size)
    # a tree of n leaves is tiled by exactly one complete subtree per set bit of n
    assert reader.node_count == bin(size).count("1")
    assert len(reader.calls) == (1 if size else 0)


@settings(max_examples=150, deadline=None)
@given(size=_sizes, data=st.data())
def test_inclusion_proof_from_reads_o_log_n_nodes_in_one_call(
    size: int, data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, size - 1), label="index")
    reader = CountingReader(size)
    assert merkle.inclusion_proof_from(index, size, reader) == ref_path(index, LEAVES[:size])
    assert len(reader.calls) == 1
    # The path has at most bit_length(n) hashes, and each is one complete subtree except the
    # sibling taken on the first step left off the tree's right edge: it is at most n/2 wide,
    # so tiled by at most bit_length(n) - 1 nodes. Hence (bit_length(n) - 1) * 2 at most;
    # trees of 2^k - 1 leaves reach it.
    assert reader.node_count <= 2 * size.bit_length() - 2


@settings(max_examples=150, deadline=None)
@given(size2=_sizes, data=st.data())
def test_consistency_proof_from_reads_o_log_n_nodes_in_one_call(
    size2: int, data: st.DataObject
) -> None:
    size1 = data.draw(st.integers(0, size2), label="size1")
    reader = CountingReader(size2)
    proof = merkle.consistency_proof_from(size1, size2, reader)
    assert proof == ref_proof(size1, LEAVES[:size2])
    assert len(reader.calls) == (0 if size1 in (0, size2) else 1)
    # As for inclusion, with at most bit_length(n) + 1 hashes: 2 * bit_length(n) - 1 nodes.
    assert reader.node_count <= max(0, 2 * size2.bit_length() - 1)


@settings(max_examples=200, deadline=None)
@given(start=st.integers(0, 5000), width=st.integers(0, 5000))
def test_range_nodes_tile_the_range_with_aligned_complete_subtrees(start: int, width: int) -> None:
    position = start
    for level, index in merkle.range_nodes(start, start + width):
        assert index << level == position
        position += 1 << level
    assert position == start + width


def test_a_reader_returning_the_wrong_number_of_hashes_is_an_input_error() -> None:
    with pytest.raises(InputError, match="node reader returned 0 hashes for 2 nodes"):
        merkle.root_from(3, lambda nodes: [])


# ---------------------------------------------------------------------------------------------
# (c) Mutations: every changed proof, root, leaf, index or size is rejected, unless it makes a
# statement the RFC 9162 verifier cannot tell apart from the original (see below).

ALL_BITS = range(256)
# For larger trees, which run the same verifier code paths as small ones again: both ends of the
# first and last bytes, and one bit in the middle.
SOME_BITS = [0, 7, 109, 248, 255]
# Index and size bits to flip: every bit up to 2^15, and two far above any tree here.
INTEGER_BITS = [*range(16), 31, 63]
EXTRA = _sha256(b"an unrelated hash")


def _flip(value: bytes, bit: int) -> bytes:
    flipped = bytearray(value)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def _structural_mutations(proof: list[bytes]) -> Iterator[tuple[str, list[bytes]]]:
    """Every proof that differs from ``proof`` by one added, removed, duplicated or moved hash."""
    yield "appended", [*proof, EXTRA]
    yield "prepended", [EXTRA, *proof]
    for i in range(len(proof)):
        yield f"removed {i}", proof[:i] + proof[i + 1 :]
        yield f"duplicated {i}", proof[: i + 1] + proof[i:]
        yield f"inserted before {i}", [*proof[:i], EXTRA, *proof[i:]]
        yield f"replaced {i}", [*proof[:i], EXTRA, *proof[i + 1 :]]
    for i in range(len(proof) - 1):
        yield f"swapped {i} and {i + 1}", [*proof[:i], proof[i + 1], proof[i], *proof[i + 2 :]]
    if len(proof) > 2:
        yield "reversed", proof[::-1]
        yield "rotated", [*proof[1:], proof[0]]


def _accepts(verify: Callable[..., None], *args: object) -> bool:
    try:
        verify(*args)
    except VerificationError:
        return False
    return True


def _inclusion_mutation_failures(index: int, size: int, bits: Sequence[int]) -> list[str]:
    """What the verifier wrongly accepted (or wrongly rejected) among mutations of one proof."""
    leaf, root = LEAVES[index], ref_root(size)
    proof = merkle.inclusion_proof(index, LEAVES[:size])
    verify = merkle.verify_inclusion
    assert _accepts(verify, leaf, index, size, proof, root)
    failures = []
    for bit in bits:
        if _accepts(verify, _flip(leaf, bit), index, size, proof, root):
            failures.append(f"leaf bit {bit}")
        if _accepts(verify, leaf, index, size, proof, _flip(root, bit)):
            failures.append(f"root bit {bit}")
        for i, element in enumerate(proof):
            mutated = [*proof[:i], _flip(element, bit), *proof[i + 1 :]]
            if _accepts(verify, leaf, index, size, mutated, root):
                failures.append(f"proof[{i}] bit {bit}")
    for what, mutated in _structural_mutations(proof):
        if _accepts(verify, leaf, index, size, mutated, root):
            failures.append(f"proof {what}")
    shape = inclusion_shape(index, size)
    for bit in INTEGER_BITS:
        for new_index, new_size in ((index ^ 1 << bit, size), (index, size ^ 1 << bit)):
            accepted = _accepts(verify, leaf, new_index, new_size, proof, root)
            if new_index < new_size and inclusion_shape(new_index, new_size) == shape:
                # Indistinguishable: the verifier does exactly the same hashing, so it must
                # accept; the statement is false all the same (root is not that of a tree of
                # new_size leaves), which only the signed checkpoint's size can expose.
                assert new_size != size
                assert new_size <= len(LEAVES)
                if not accepted or ref_root(new_size) == root:
                    failures.append(f"same-shape ({new_index}, {new_size}) misjudged")
            elif accepted:
                failures.append(f"index/size ({new_index}, {new_size})")
    return failures


def _consistency_mutation_failures(size1: int, size2: int, bits: Sequence[int]) -> list[str]:
    root1, root2 = ref_root(size1), ref_root(size2)
    proof = merkle.consistency_proof(size1, LEAVES[:size2])
    verify = merkle.verify_consistency
    assert _accepts(verify, size1, size2, root1, root2, proof)
    failures = []
    for bit in bits:
        if _accepts(verify, size1, size2, _flip(root1, bit), root2, proof):
            failures.append(f"root1 bit {bit}")
        # The empty tree is a prefix of every tree: with size1 = 0 any root2 is consistent.
        if size1 and _accepts(verify, size1, size2, root1, _flip(root2, bit), proof):
            failures.append(f"root2 bit {bit}")
        for i, element in enumerate(proof):
            mutated = [*proof[:i], _flip(element, bit), *proof[i + 1 :]]
            if _accepts(verify, size1, size2, root1, root2, mutated):
                failures.append(f"proof[{i}] bit {bit}")
    for what, mutated in _structural_mutations(proof):
        if _accepts(verify, size1, size2, root1, root2, mutated):
            failures.append(f"proof {what}")
    shape = consistency_shape(size1, size2)
    for bit in INTEGER_BITS:
        for new1, new2 in ((size1 ^ 1 << bit, size2), (size1, size2 ^ 1 << bit)):
            accepted = _accepts(verify, new1, new2, root1, root2, proof)
            if size1 == new1 == 0 and new2 > 0:
                # From the empty tree there is nothing to prove: the statement is true for any
                # size2 and root2, and an empty proof is the only one.
                if not accepted:
                    failures.append(f"empty old tree, size2 {new2} rejected")
            elif new2 > 0 and new1 <= new2 and consistency_shape(new1, new2) == shape:
                # Indistinguishable, as for inclusion: accepted, yet root1/root2 are not the
                # roots of trees of new1/new2 leaves.
                assert new2 <= len(LEAVES)
                if not accepted or (ref_root(new1), ref_root(new2)) == (root1, root2):
                    failures.append(f"same-shape ({new1}, {new2}) misjudged")
            elif accepted:
                failures.append(f"sizes ({new1}, {new2})")
    return failures


def _bits_for(size: int) -> Sequence[int]:
    """Every bit for trees of up to 16 leaves; a few beyond, to keep the sweep to seconds."""
    return ALL_BITS if size <= 16 else SOME_BITS


@pytest.mark.parametrize("size", range(1, 71))
def test_every_inclusion_mutation_is_rejected_for_small_trees(size: int) -> None:
    failures = {
        index: found
        for index in range(size)
        if (found := _inclusion_mutation_failures(index, size, _bits_for(size)))
    }
    assert not failures


@pytest.mark.parametrize(
    ("index", "size"),
    [
        *[(0, 1000), (1, 1000), (511, 1000), (512, 1000), (999, 1000)],
        *[(0, 4097), (2048, 4097), (4095, 4097), (4096, 4097)],
    ],
)
def test_every_inclusion_mutation_is_rejected_for_large_trees(index: int, size: int) -> None:
    assert not _inclusion_mutation_failures(index, size, ALL_BITS)


@pytest.mark.parametrize("size2", range(1, 71))
def test_every_consistency_mutation_is_rejected_for_small_trees(size2: int) -> None:
    failures = {
        size1: found
        for size1 in range(size2 + 1)
        if (found := _consistency_mutation_failures(size1, size2, _bits_for(size2)))
    }
    assert not failures


@pytest.mark.parametrize(
    ("size1", "size2"),
    [
        *[(1, 1000), (500, 1000), (512, 1000), (999, 1000), (1000, 1000)],
        *[(1, 4097), (1000, 4097), (2048, 4097), (3000, 4097), (4096, 4097)],
    ],
)
def test_every_consistency_mutation_is_rejected_for_large_trees(size1: int, size2: int) -> None:
    assert not _consistency_mutation_failures(size1, size2, ALL_BITS)


def test_size_is_authenticated_by_the_checkpoint_not_the_proof() -> None:
    # The audit path of leaf 0 in a tree of 5 leaves is three right siblings, exactly like that
    # of leaf 0 in a tree of 7 leaves, so RFC 9162 verification cannot tell the two apart:
    proof, root5 = merkle.inclusion_proof(0, LEAVES[:5]), merkle.root(LEAVES[:5])
    assert inclusion_shape(0, 5) == inclusion_shape(0, 7) == ("right", "right", "right")
    merkle.verify_inclusion(LEAVES[0], 0, 5, proof, root5)
    merkle.verify_inclusion(LEAVES[0], 0, 7, proof, root5)  # accepted, and false:
    assert merkle.root(LEAVES[:7]) != root5
    # What binds the size is the checkpoint, which signs (size, root) together: against the
    # root that a checkpoint for 7 leaves carries, the same proof fails.
    with pytest.raises(VerificationError, match="leads to root"):
        merkle.verify_inclusion(LEAVES[0], 0, 7, proof, merkle.root(LEAVES[:7]))


def test_consistency_sizes_are_authenticated_by_the_checkpoints_not_the_proof() -> None:
    # Likewise 4 -> 5 and 4 -> 7: one right sibling on top of the old (power of two) tree.
    root4, root5 = merkle.root(LEAVES[:4]), merkle.root(LEAVES[:5])
    proof = merkle.consistency_proof(4, LEAVES[:5])
    assert consistency_shape(4, 5) == consistency_shape(4, 7) == ("right",)
    merkle.verify_consistency(4, 5, root4, root5, proof)
    merkle.verify_consistency(4, 7, root4, root5, proof)  # accepted, and false:
    assert merkle.root(LEAVES[:7]) != root5
    with pytest.raises(VerificationError, match="new root"):
        merkle.verify_consistency(4, 7, root4, merkle.root(LEAVES[:7]), proof)


# ---------------------------------------------------------------------------------------------
# Out-of-range and ill-typed arguments.

_ROOT5 = ref_root(5)
_PROOF_2_OF_5 = ref_path(2, LEAVES[:5])


@pytest.mark.parametrize(
    ("index", "size"),
    [(5, 5), (6, 5), (0, 0), (-1, 5), (0, -1), (-1, -1), (2**64, 5)],
)
def test_verify_inclusion_rejects_indices_outside_the_tree(index: int, size: int) -> None:
    with pytest.raises(VerificationError, match="outside a tree"):
        merkle.verify_inclusion(LEAVES[2], index, size, _PROOF_2_OF_5, _ROOT5)


_BAD_HASHES = [
    pytest.param(b"\x00" * 31, id="31-bytes"),
    pytest.param(b"\x00" * 33, id="33-bytes"),
    pytest.param(b"", id="empty"),
    pytest.param("0" * 32, id="str"),
    pytest.param(bytearray(32), id="bytearray"),
    pytest.param(None, id="None"),
    pytest.param(0, id="int"),
]


@pytest.mark.parametrize("bad", _BAD_HASHES)
def test_verify_inclusion_rejects_a_bad_leaf_hash(bad: object) -> None:
    with pytest.raises(VerificationError, match="leaf hash must be 32 bytes"):
        merkle.verify_inclusion(bad, 2, 5, _PROOF_2_OF_5, _ROOT5)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", _BAD_HASHES)
def test_verify_inclusion_rejects_a_bad_root(bad: object) -> None:
    with pytest.raises(VerificationError, match="root must be 32 bytes"):
        merkle.verify_inclusion(LEAVES[2], 2, 5, _PROOF_2_OF_5, bad)  # type: ignore[arg-type]


_BAD_PROOF_HASHES = [p for p in _BAD_HASHES if p.id != "bytearray"]


@pytest.mark.parametrize("bad", _BAD_PROOF_HASHES)
def test_verify_inclusion_rejects_a_bad_proof_hash(bad: object) -> None:
    proof: list[object] = list(_PROOF_2_OF_5)
    proof[-1] = bad
    with pytest.raises(VerificationError, match="proof hash must be 32 bytes"):
        merkle.verify_inclusion(LEAVES[2], 2, 5, proof, _ROOT5)  # type: ignore[arg-type]


_ROOT3, _ROOT7 = ref_root(3), ref_root(7)
_PROOF_3_TO_7 = ref_proof(3, LEAVES[:7])


@pytest.mark.parametrize(("size1", "size2"), [(8, 7), (4, 3), (-1, 7), (3, -1), (-3, -1), (1, 0)])
def test_verify_consistency_rejects_sizes_out_of_order(size1: int, size2: int) -> None:
    with pytest.raises(VerificationError, match="consistency needs 0 <= size1 <= size2"):
        merkle.verify_consistency(size1, size2, _ROOT3, _ROOT7, _PROOF_3_TO_7)


@pytest.mark.parametrize("bad", _BAD_HASHES)
def test_verify_consistency_rejects_bad_roots(bad: object) -> None:
    with pytest.raises(VerificationError, match="root1 must be 32 bytes"):
        merkle.verify_consistency(3, 7, bad, _ROOT7, _PROOF_3_TO_7)  # type: ignore[arg-type]
    with pytest.raises(VerificationError, match="root2 must be 32 bytes"):
        merkle.verify_consistency(3, 7, _ROOT3, bad, _PROOF_3_TO_7)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", _BAD_PROOF_HASHES)
def test_verify_consistency_rejects_a_bad_proof_hash(bad: object) -> None:
    proof: list[object] = list(_PROOF_3_TO_7)
    proof[-1] = bad
    with pytest.raises(VerificationError, match="proof hash must be 32 bytes"):
        merkle.verify_consistency(3, 7, _ROOT3, _ROOT7, proof)  # type: ignore[arg-type]


def test_verify_consistency_of_equal_or_empty_trees_needs_an_empty_proof() -> None:
    merkle.verify_consistency(3, 3, _ROOT3, _ROOT3, [])
    merkle.verify_consistency(0, 7, merkle.EMPTY_ROOT, _ROOT7, [])
    merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])
    with pytest.raises(VerificationError, match="two different roots for one tree size 3"):
        merkle.verify_consistency(3, 3, _ROOT3, _ROOT7, [])
    with pytest.raises(VerificationError, match="root of the empty tree"):
        merkle.verify_consistency(0, 7, _ROOT3, _ROOT7, [])
    with pytest.raises(VerificationError, match="must be empty"):
        merkle.verify_consistency(3, 3, _ROOT3, _ROOT3, [_ROOT3])
    with pytest.raises(VerificationError, match="consistency proof is empty"):
        merkle.verify_consistency(3, 7, _ROOT3, _ROOT7, [])


@pytest.mark.parametrize(("index", "size"), [(5, 5), (6, 5), (0, 0), (-1, 5), (-1, 0)], ids=str)
def test_inclusion_proof_of_an_index_outside_the_tree_is_an_input_error(
    index: int, size: int
) -> None:
    with pytest.raises(InputError, match="outside a tree"):
        merkle.inclusion_proof(index, LEAVES[:size])
    with pytest.raises(InputError, match="outside a tree"):
        merkle.inclusion_proof_from(index, size, CountingReader(max(size, 0)))


@pytest.mark.parametrize(("size1", "size2"), [(6, 5), (1, 0), (-1, 5), (-1, 0)])
def test_consistency_proof_of_sizes_out_of_order_is_an_input_error(size1: int, size2: int) -> None:
    with pytest.raises(InputError, match="consistency needs 0 <= size1 <= size2"):
        merkle.consistency_proof(size1, LEAVES[:size2])
    with pytest.raises(InputError, match="consistency needs 0 <= size1 <= size2"):
        merkle.consistency_proof_from(size1, size2, CountingReader(max(size2, 0)))


def test_root_from_a_negative_size_is_an_input_error() -> None:
    with pytest.raises(InputError, match="tree size must be >= 0, got -1"):
        merkle.root_from(-1, CountingReader(0))


_BAD_LEAF_HASHES = [
    pytest.param(b"\x00" * 31, id="31-bytes"),
    pytest.param(b"\x00" * 33, id="33-bytes"),
    pytest.param("0" * 32, id="str"),
    pytest.param(None, id="None"),
]


def _leaves_ending_in(bad: object, size: int) -> list[object]:
    leaves: list[object] = list(LEAVES[:size])
    leaves[-1] = bad
    return leaves


@pytest.mark.parametrize("bad", _BAD_LEAF_HASHES)
def test_root_rejects_bad_leaf_hashes(bad: object) -> None:
    with pytest.raises(InputError, match=r"^leaf hash 4 must be 32 bytes, got "):
        merkle.root(_leaves_ending_in(bad, 5))  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", _BAD_LEAF_HASHES)
def test_inclusion_proof_rejects_bad_leaf_hashes(bad: object) -> None:
    # the bad hash is leaf 0's last audit-path sibling
    with pytest.raises(InputError, match=r"^leaf hash 4 must be 32 bytes, got "):
        merkle.inclusion_proof(0, _leaves_ending_in(bad, 5))  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", _BAD_LEAF_HASHES)
def test_consistency_proof_rejects_bad_leaf_hashes(bad: object) -> None:
    # the bad hash is the last hash of the proof from 1 to 5
    with pytest.raises(InputError, match=r"^leaf hash 4 must be 32 bytes, got "):
        merkle.consistency_proof(1, _leaves_ending_in(bad, 5))  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(size=st.integers(min_value=1, max_value=70))
def test_root_and_paths_give_the_root_and_every_inclusion_proof(size: int) -> None:
    """A promise's batch: one pass gives the tree's root and each leaf's proof, the same as
    the general functions, and each proof verifies at its own position only."""
    hashes = [hashlib.sha256(b"batch %d" % i).digest() for i in range(size)]
    root, paths = merkle.root_and_paths(hashes)
    assert root == merkle.root(hashes)
    assert paths == [merkle.inclusion_proof(i, hashes) for i in range(size)]
    for position, path in enumerate(paths):
        merkle.verify_inclusion(hashes[position], position, size, path, root)
        if size > 1:
            with pytest.raises(VerificationError, match="inclusion proof"):
                merkle.verify_inclusion(hashes[position], (position + 1) % size, size, path, root)


def test_root_and_paths_needs_a_leaf() -> None:
    with pytest.raises(InputError, match="at least one leaf"):
        merkle.root_and_paths([])
