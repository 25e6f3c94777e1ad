"""The explorer in a real browser (headless Chromium driven by selenium) against a real devnet.

Two nodes on loopback, peered (each witnesses the other), serve the explorer. The browser opens
every page, runs a model through "try it", and verifies real and tampered bundles in the page;
verify.js and the Python verifier are run on the same vectors and on every single-field mutation
of real bundles (attested with a witness quorum, and replicated:2) and must reach the same
verdict with the same steps and the same message. No request may leave for another host.

``make screenshots`` (``VERINFER_SCREENSHOTS=DIR``) saves each page at 1,280 and 390 px.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, str(Path(__file__).parents[1] / "hub"))
sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parent))
from hub_models import sklearn_model
from parity import crafted, mutations, python_verdict
from vectors import load_vectors

from verinfer import cid, devnet, merkle, note, tensors
from verinfer.client import Client, Network
from verinfer.errors import Error, InputError
from verinfer.verify.trust import TrustRoot

X = np.array([[5.9, 3.0, 5.1, 1.8]], dtype=np.float32)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOTS = os.environ.get("VERINFER_SCREENSHOTS")


@dataclass(frozen=True)
class Net:
    """A running two-node devnet with a published model and real answers."""

    directory: Path
    url: str  # the first node's explorer
    trust: list[str]
    witnesses: list[str]
    operators: dict[str, str]
    attested: str  # a bundle (JSON text) cosigned by the other node's witness
    replicated: str  # a replicated:2 bundle
    inputs: dict[str, Any]  # JSON form
    outputs: dict[str, Any]


def _pixels_model() -> bytes:
    """An image model in miniature: float32 [1, 3, 8, 8] -> each channel's mean, [1, 3]."""
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["scores"])],
        "pixels",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A picture of one colour, as PNG (8-bit RGB, no colour profile)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))  # fmt: skip


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    directory = tmp_path_factory.mktemp("explorer") / "net"
    nodes = devnet.up(directory, 2)
    try:
        trust = [n["vkey"] for n in nodes]
        witnesses, operators = [], {}
        for line in (directory / devnet.WITNESSES_FILE).read_text().splitlines():
            key, operator = line.split()
            witnesses.append(key)
            operators[key] = operator
        alice = note.Signer(note.generate_key("alice")[0])
        with Client(nodes[0]["url"], trusted_vkeys=trust) as client:
            client.publish(sklearn_model("iris"), repository="alice/iris", version="1",
                           signer=alice, description="iris flowers, a small tree")  # fmt: skip
            client.publish(_pixels_model(), repository="alice/pixels", version="1",
                           signer=alice, description="mean colour of a picture")  # fmt: skip
            for _ in range(3):  # a few entries and checkpoints to chart
                result = client.infer("alice/iris@1", {"X": X})
            bundle = client.cosigned(result.bundle, witnesses, 1, timeout=60, operators=operators)
        with Network(directory / devnet.NETWORK_FILE) as network:
            replicated = network.infer("alice/iris@1", {"X": X}, mode="replicated:2").bundle
        yield Net(directory, nodes[0]["url"], trust, witnesses, operators, bundle.to_json(),
                  replicated.to_json(), tensors.encode_json({"X": X}),
                  tensors.encode_json(result.outputs))  # fmt: skip
    finally:
        devnet.down(directory)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-extensions", "--no-first-run", "--window-size=1280,900",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--disable-default-apps"):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    driver.set_script_timeout(300)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver: WebDriver, url: str, page: str, ready: str = "h1") -> None:
    """Open ``#/<page>`` and wait until the page rendered (``ready``: a CSS selector)."""
    driver.execute_script("document.getElementById('view')?.removeAttribute('data-page')")
    target = f"{url}/#/{page}"
    if driver.current_url == target:  # the same hash would not render again
        driver.refresh()
    else:
        driver.get(target)
    shown = f"#view[data-page='{page.split('/', maxsplit=1)[0].split('?', maxsplit=1)[0]}'] {ready}"
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, shown))
    assert not driver.find_elements(By.CSS_SELECTOR, "#view .error"), driver.find_element(
        By.ID, "view"
    ).text


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], Any]) -> Any:
    return WebDriverWait(driver, 60, poll_frequency=0.1).until(condition)


def in_browser(driver: WebDriver, body: str, *arguments: Any) -> Any:
    """Run ``body`` (async JavaScript with ``v``, verify.js, and ``args``) in the page."""
    script = (
        "const done = arguments[arguments.length - 1]; const args = arguments[0];"
        "import('/explorer/verify.js').then(async (v) => {" + body + "})"
        ".then(done, (e) => done({thrown: String(e && e.stack || e)}));"
    )
    found = driver.execute_async_script(script, list(arguments))
    assert not (isinstance(found, dict) and "thrown" in found), found
    return found


def same(js: dict[str, Any], py: dict[str, Any]) -> bool:
    """Equal verdicts; a JSON syntax error is worded by each language's parser, so for those
    only what was malformed must agree."""
    if js == py:
        return True
    syntax = ("Expecting", "Extra data", "Unterminated", "Invalid control", "Invalid \\escape")
    error = py["error"] or ""
    if any(f": {word}" in error for word in syntax) and js["ok"] == py["ok"] is False:
        return bool(js["steps"] == py["steps"] and js["error"].split(":")[0] == error.split(":")[0])
    return False


# ---------------------------------------------------------------------------------------------
# One specification, two implementations


def test_vectors_pass_in_the_browser_and_in_python(net: Net, browser: WebDriver) -> None:
    open_page(browser, net.url, "verify")
    merkle_vectors = load_vectors("rfc9162_merkle.json")
    vectors = {
        "cids": load_vectors("cids.json")["vectors"],
        "merkle": merkle_vectors,
        "notes": load_vectors("signed_notes.json")["vectors"],
        "tensors": load_vectors("tensors.json"),
    }
    found = in_browser(
        browser,
        """
        const [vec] = args, out = {cids: [], leaves: [], inclusion: [], consistency: [], notes: [],
          tensors: [], maps: []};
        const fromHex = (h) => Uint8Array.from(h.match(/../g) ?? [], (x) => parseInt(x, 16));
        const run = (f) => f().then(() => true, (e) => e.message);
        const utf8 = (text) => new TextEncoder().encode(text);
        for (const c of vec.cids) out.cids.push(await v.cidCompute(utf8(c.data_utf8)));
        const m = vec.merkle;
        for (const l of m.leaf_inputs) out.leaves.push(v.hex(await v.leafHash(fromHex(l))));
        const root = (size) => fromHex(m.roots[size]);
        for (const p of m.inclusion) {
          const leaf = fromHex(m.leaf_hashes[p.index]), proof = p.proof.map(fromHex);
          out.inclusion.push(await run(
            () => v.verifyInclusion(leaf, p.index, p.size, proof, root(p.size))));
        }
        for (const p of m.consistency) {
          const proof = p.proof.map(fromHex);
          out.consistency.push(await run(
            () => v.verifyConsistency(p.size1, p.size2, root(p.size1), root(p.size2), proof)));
        }
        for (const n of vec.notes) {
          const signed = `${n.text}\\n\\u2014 ${n.vkey.split("+")[0]} ${n.signature_b64}\\n`;
          out.notes.push(await run(async () => v.verifyNote(signed, [await v.parseKey(n.vkey)])));
        }
        // selenium hands over JS values: pyValue reads them as json.loads would their text
        const decoded = (name, t) => v.decodeTensor(name, v.pyValue(t));
        for (const t of vec.tensors.tensors) {
          out.tensors.push("sha256:" + v.hex(await v.tensorDigest(decoded(t.name, t.tensor))));
        }
        for (const t of vec.tensors.maps) {
          out.maps.push(await v.mapDigest(Object.fromEntries(
            Object.entries(t.tensors).map(([name, x]) => [name, decoded(name, x)]))));
        }
        return out;
        """,
        vectors,
    )
    # the browser's answers are the vectors' ...
    assert found["cids"] == [c["cid"] for c in vectors["cids"]]
    assert found["leaves"] == merkle_vectors["leaf_hashes"]
    assert found["inclusion"] == [True] * len(merkle_vectors["inclusion"])
    assert found["consistency"] == [True] * len(merkle_vectors["consistency"])
    assert found["notes"] == [True] * len(vectors["notes"])
    assert found["tensors"] == [t["digest"] for t in vectors["tensors"]["tensors"]]
    assert found["maps"] == [t["digest"] for t in vectors["tensors"]["maps"]]
    # ... and Python's
    assert [cid.compute(c["data_utf8"].encode()) for c in vectors["cids"]] == found["cids"]
    leaves = [merkle.leaf_hash(bytes.fromhex(x)).hex() for x in merkle_vectors["leaf_inputs"]]
    assert leaves == found["leaves"]
    for p in merkle_vectors["inclusion"]:
        merkle.verify_inclusion(
            bytes.fromhex(merkle_vectors["leaf_hashes"][p["index"]]), p["index"], p["size"],
            [bytes.fromhex(h) for h in p["proof"]],
            bytes.fromhex(merkle_vectors["roots"][str(p["size"])]),
        )  # fmt: skip
    for n in vectors["notes"]:
        signed = f"{n['text']}\n— {n['vkey'].split('+')[0]} {n['signature_b64']}\n"
        note.verify(signed, [n["vkey"]])
    digests = [
        tensors.digest(tensors.decode_json({"x": t["tensor"]})["x"])
        for t in vectors["tensors"]["tensors"]
    ]
    assert digests == found["tensors"]
    assert [
        tensors.map_digest(tensors.decode_json(t["tensors"])) if t["tensors"] else
        tensors.map_digest({}) for t in vectors["tensors"]["maps"]
    ] == found["maps"]  # fmt: skip


def test_npz_files_have_the_same_digests_in_the_browser(net: Net, browser: WebDriver) -> None:
    """.npz as verinfer writes them (zip64, stored) and as numpy compresses them (deflate), of
    every dtype, little- and big-endian: the browser reads the digest Python computes."""
    rng = np.random.default_rng(7)
    arrays = {
        dtype: (rng.normal(size=(2, 3)) * 50).astype(dtype) for dtype in tensors.DTYPES
    }  # fmt: skip
    arrays["big-endian"] = np.arange(5, dtype=">f4")
    arrays["empty"] = np.zeros((0, 3), np.int64)
    compressed = io.BytesIO()
    np.savez_compressed(compressed, a=np.arange(12, dtype=np.int32).reshape(3, 4), b=np.ones(3))
    two = tensors.encode_binary({"a": np.ones(2, np.int8), "__proto__": np.zeros(1, np.int8)})
    end = two.rindex(b"PK\x05\x06")  # the directory lists two members; its count says one
    understated = two[: end + 8] + struct.pack("<HH", 1, 1) + two[end + 12 :]
    files = [tensors.encode_binary(arrays), compressed.getvalue(), two, understated]
    # what Python refuses, or reads otherwise than a first look at the header would
    f4 = np.array([1.0, 2.0], "<f4").tobytes()
    twice = _npz({"x.npy": _npy("{'descr': '<f4', 'descr': '<i4', 'fortran_order': False, "
                                "'shape': (2,), }", f4)})  # fmt: skip
    crc = bytearray(
        _npz({"x.npy": _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", f4)})
    )
    crc[crc.rindex(b"PK\x01\x02") + 16] ^= 0xFF  # the directory's CRC-32
    bad = [twice, bytes(crc)]
    assert tensors.decode_binary(twice)["x"].dtype == np.int32  # numpy reads the last 'descr'
    with pytest.raises(InputError, match="Bad CRC-32"):
        tensors.decode_binary(bytes(crc))
    found = in_browser(
        browser,
        """
        const out = [];
        for (const text of args[0]) {
          const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
          try { out.push(await v.mapDigest(await v.decodeNpz(bytes))); }
          catch (e) { out.push("refused: " + e.message); }
        }
        return out;
        """,
        [base64.b64encode(f).decode() for f in files + bad],
    )
    assert found[: len(files)] == [tensors.map_digest(tensors.decode_binary(f)) for f in files]
    assert found[len(files)].startswith(
        "refused: tensor 'x': unsupported .npy header \"{'descr': '<f4', 'descr': '<i4', "
    )
    assert found[len(files) + 1] == "refused: malformed .npy/.npz data: Bad CRC-32 for file 'x.npy'"


def _npy(header: str, data: bytes) -> bytes:
    """An .npy of version 1.0 with this header text (padded as numpy pads it)."""
    raw = header.encode()
    raw += b" " * (64 - (10 + len(raw) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw + data


def _npz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _cases(net: Net) -> list[tuple[str, str, dict[str, Any]]]:
    """Real bundles, every single-field mutation of them, and changes to what they are
    checked against."""
    quorum = {"trusted": net.trust, "inputs": net.inputs, "outputs": net.outputs,
              "witnesses": net.witnesses, "quorum": 1, "operators": net.operators}  # fmt: skip
    plain = {"trusted": net.trust, "inputs": net.inputs, "outputs": net.outputs}
    cases = [("attested", net.attested, quorum), ("replicated", net.replicated, plain)]
    for name, text, options in list(cases):
        cases += [(f"{name}: {what}", mutated, options)
                  for what, mutated in mutations(json.loads(text))]  # fmt: skip
    other = note.generate_key("node-1")[1]
    changed = json.loads(json.dumps(net.inputs))
    changed["X"]["data"][0][3] += 0.5
    own = {w: w for w in net.witnesses}  # each witness its own operator: node 2's ...
    own[net.witnesses[0]] = net.trust[0]  # ... and node 1's that of the log it runs beside
    against = [
        ("no trusted key", {**quorum, "trusted": []}),
        ("another key trusted", {**quorum, "trusted": [other]}),
        ("other inputs", {**quorum, "inputs": changed}),
        ("outputs given as inputs", {**quorum, "inputs": net.outputs}),
        ("inputs given as outputs", {**quorum, "outputs": net.inputs}),
        ("quorum 2", {**quorum, "quorum": 2}),
        ("only the log's own witness", {**quorum, "witnesses": net.witnesses[:1]}),
        ("each witness its own operator, node 1's the log's", {**quorum, "operators": own}),
        ("a malformed witness key", {**quorum, "witnesses": ["nope"]}),
        ("the cosigner's operator is the log's",
         {**quorum, "operators": {net.witnesses[1]: net.trust[0]}}),
    ]  # fmt: skip
    cases += [(what, net.attested, options) for what, options in against]
    cases += [("replicated, one node trusted", net.replicated, {**plain, "trusted": net.trust[:1]})]
    # what a dict cannot hold: a key twice (JSON.parse would keep the last one)
    receipt = json.loads(json.loads(net.attested)["receipt"])
    twice = '{"nonce":"x",' + json.dumps(receipt, separators=(",", ":"))[1:]
    cases += [
        ("index twice", '{"index":0,' + net.attested[1:], quorum),
        ("receipt field twice", json.dumps({**json.loads(net.attested), "receipt": twice}), quorum),
        ("nested key twice", net.replicated.replace('"evidence":{', '"evidence":{"x":1,"x":2,', 1),
         plain),
        ("quoted brace", net.attested.replace('"index"', '"in{\\"dex"', 1), quorum),
    ]  # fmt: skip
    return cases + crafted()


def test_both_verifiers_agree_on_real_and_every_mutated_bundle(
    net: Net, browser: WebDriver
) -> None:
    cases = _cases(net)
    open_page(browser, net.url, "verify")
    found = in_browser(
        browser,
        """
        const out = [];
        for (const [text, options] of args[0]) {
          const r = await v.verify(text, options);
          out.push({ok: r.ok, steps: r.steps, error: r.error});
        }
        return out;
        """,
        [[text, options] for _, text, options in cases],
    )
    expected = [python_verdict(text, options) for _, text, options in cases]
    differ = [
        (what, js, py)
        for (what, _, _), js, py in zip(cases, found, expected, strict=True)
        if not same(js, py)
    ]
    assert not differ, differ[:5]
    verdicts = dict(zip([what for what, _, _ in cases], expected, strict=True))
    # the real bundles pass every step; every change is caught but three that change nothing
    # the signatures cover: a cosignature line twice or without its newline (the note is the
    # same), and witnesses each of its own operator but the log's (node 2's still counts)
    steps = {name: [line.split(".")[0] for line in verdicts[name]["steps"]]
             for name in ("attested", "replicated")}  # fmt: skip
    assert steps == {
        "attested": ["1", "1+", "2", "4", "5"],
        "replicated": ["1", "2", "2+", "4", "5"],
    }
    twice = ("index twice", "receipt field twice", "nested key twice", "quoted brace")
    errors = {what: verdicts[what]["error"] for what in twice}
    assert errors == {
        "index twice": "malformed bundle: duplicate object key",
        "receipt field twice": "malformed receipt: duplicate object key",
        "nested key twice": "malformed bundle: duplicate object key",
        "quoted brace": "malformed bundle: fields ['checkpoint', 'cosignatures', 'evidence', "
        "'in{\"dex', 'proof', 'receipt', 'type']",
    }
    passed = sorted(what for what, verdict in verdicts.items() if verdict["ok"])
    assert passed == [
        "attested",
        "attested: cosignatures last twice",
        "attested: cosignatures[0] truncated",
        "crafted",
        "crafted: -0 for 0.0",  # json reads -0 as the integer 0: +0.0
        "crafted: NaN",
        "crafted: U+FEFF in a signature name",  # not whitespace to Python
        "crafted: a BOM before the bundle",  # json.loads of bytes drops it
        "crafted: the same key twice in the inputs",  # json.loads keeps the last
        "each witness its own operator, node 1's the log's",
        "replicated",
    ]
    assert len(cases) > 600  # 674 when written: the generator must not shrink unnoticed
    _trust_roots_are_read_alike(net, browser)
    _equivocation_is_checked_with_the_logs_known_key(browser)


def _trust_roots_are_read_alike(net: Net, browser: WebDriver) -> None:
    """The verify page reads a trust root as TrustRoot.from_json does: the same keys, or the
    same refusal."""
    good = json.loads(TrustRoot.of(net.trust, witnesses=net.witnesses,
                                   operators=net.operators).to_json())  # fmt: skip
    texts = [
        json.dumps(good),
        json.dumps({**good, "srs": [cid.compute(b"srs")]}),
        json.dumps(good)[:-1] + ', "nodes": []}',  # a key twice: JSON.parse keeps the last
        json.dumps({**good, "note": "x"}),
        json.dumps({**good, "nodes": [*net.trust, "nope"]}),
        json.dumps({**good, "witnesses": [net.witnesses[0][:-2]]}),
        json.dumps({**good, "operators": {"nope": "x"}}),
        json.dumps({**good, "operators": {net.witnesses[0]: 1}}),
        json.dumps({**good, "srs": ["sha256:00"]}),
        json.dumps({**good, "nodes": "x"}),
        json.dumps({**good, "type": "verinfer.trust/v2"}),
    ]
    found = in_browser(
        browser,
        """
        const out = [];
        for (const text of args[0]) {
          try { out.push({ok: true, root: await v.parseTrustRoot(text)}); }
          catch (e) { out.push({ok: false, error: e.message}); }
        }
        return out;
        """,
        texts,
    )
    expected = []
    for text in texts:
        try:
            root = TrustRoot.from_json(text)
        except Error as exc:
            expected.append({"ok": False, "error": str(exc)})
            continue
        fields = {"nodes": list(root.nodes), "witnesses": list(root.witnesses),
                  "operators": dict(root.operators), "publishers": list(root.publishers),
                  "srs": list(root.srs)}  # fmt: skip
        expected.append({"ok": True, "root": fields})
    assert found == expected
    assert [r["ok"] for r in expected] == [True, True] + [False] * 9


def _equivocation_is_checked_with_the_logs_known_key(browser: WebDriver) -> None:
    """Equivocation evidence convicts only under the key the page knows for the log: evidence
    signed by another key of the same name (and naming that key) does not hold."""
    skey, vkey = note.generate_key("liar.example/log")
    other_skey, other_vkey = note.generate_key("liar.example/log")

    def evidence(signing: str, named: str) -> dict[str, Any]:
        signer = note.Signer(signing)
        checkpoints = [signer.sign(note.Checkpoint("liar.example/log", 5, bytes([b] * 32)).text)
                       for b in (1, 2)]  # fmt: skip
        return {"kind": "equivocation", "log": "liar.example/log", "vkey": named,
                "checkpoints": checkpoints}  # fmt: skip

    found = in_browser(
        browser,
        """
        const out = [];
        for (const [e, known] of args[0]) {
          try { out.push(String(await v.verifyEquivocation(e, known))); }
          catch (exc) { out.push(exc.message); }
        }
        return out;
        """,
        [[evidence(skey, vkey), vkey], [evidence(other_skey, other_vkey), vkey]],
    )
    assert found[0] == "5"
    assert found[1].startswith("note is not signed by any trusted key"), found


# ---------------------------------------------------------------------------------------------
# The pages


def test_the_verify_page_passes_a_real_bundle_and_fails_tampered_ones_like_the_cli(
    net: Net, browser: WebDriver, tmp_path: Path
) -> None:
    open_page(browser, net.url, "verify")

    def check(
        text: str,
        inputs: dict[str, Any] | None = None,
        trust: str = "",
        quorum: int = 0,
        witnesses: str = "",
    ) -> list[str]:
        browser.execute_script(
            "const [b, t, i, q, w] = arguments;"
            "document.querySelector('[name=quorum]').value = q;"
            "document.querySelector('[name=bundle]').value = b;"
            "document.querySelector('[name=trust]').value = t;"
            "document.querySelector('[name=inputs]').value = i;"
            "document.querySelector('[name=witnesses]').value = w;"
            "document.querySelector('[name=outputs]').value = '';"
            "document.querySelector('#result').replaceChildren();",
            text, trust or "\n".join(net.trust), json.dumps(inputs) if inputs else "", quorum,
            witnesses,
        )  # fmt: skip
        browser.find_element(By.ID, "verify").click()
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#result .verdict"))
        return [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#result ol.steps li")]

    options = {"trusted": net.trust, "inputs": net.inputs}
    python = python_verdict(net.attested, options)
    lines = check(net.attested, net.inputs)
    # the tensors as .npz files, read in the page
    for name in ("inputs", "outputs"):
        path = tmp_path / f"{name}.npz"
        path.write_bytes(tensors.encode_binary(tensors.decode_json(getattr(net, name))))
        browser.find_element(By.NAME, f"{name}-file").send_keys(str(path))
        wait_for(browser, lambda d, n=name: d.find_element(By.NAME, n).get_property("value"))
    browser.find_element(By.ID, "verify").click()
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#result ol.steps li")) == 5)
    both = python_verdict(net.attested, {**options, "outputs": net.outputs})
    shown = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#result ol.steps li")]
    assert shown[:-1] == both["steps"]
    assert [line.split(".")[0] for line in shown[:-1]] == ["1", "2", "4", "5"]
    model = json.loads(json.loads(net.attested)["receipt"])["model"]
    assert lines == [*python["steps"], f"valid: attested answer of model {model}"]
    assert browser.find_element(By.CSS_SELECTOR, "#result .badge").text == "verified"
    bundle = json.loads(net.attested)
    receipt = json.loads(bundle["receipt"])
    flipped = base64.b64encode(bytes(32)).decode()
    changed = json.loads(json.dumps(net.inputs))
    changed["X"]["data"][0][0] = 6.0
    bigger = bundle["checkpoint"].split("\n")
    bigger[1] = str(int(bigger[1]) + 1)  # the tree size the log signed
    tampered = [
        (json.dumps({**bundle, "index": bundle["index"] + 1}), net.inputs, "step 2 (inclusion)"),
        (json.dumps({**bundle, "proof": [flipped, *bundle["proof"][1:]]}), None, "step 2"),
        (json.dumps({**bundle, "checkpoint": "\n".join(bigger)}), None, "step 1 (checkpoint)"),
        (json.dumps({**bundle, "receipt": json.dumps({**receipt, "outputs": receipt["inputs"]},
                     sort_keys=True, separators=(",", ":"))}), None, "step 2 (inclusion)"),
        (net.attested, changed, "step 4 (inputs)"),
    ]  # fmt: skip
    for text, inputs, step in tampered:
        python = python_verdict(
            text, {"trusted": net.trust, **({"inputs": inputs} if inputs else {})}
        )
        lines = check(text, inputs)
        assert python["error"].startswith(step), python
        assert lines == [*python["steps"], f"error: {python['error']}"]
        assert browser.find_element(By.CSS_SELECTOR, "#result .badge").text == "failed"
    # and `verinfer verify` itself prints these lines, on the real bundle and a tampered one,
    # with node keys or with a trust root that asks for a witness quorum
    root = TrustRoot.of(net.trust, witnesses=net.witnesses, operators=net.operators).to_json()
    (tmp_path / "trust.json").write_text(root)
    for text, inputs, _ in [(net.attested, net.inputs, ""), tampered[-1]]:
        lines = check(text, inputs)
        assert lines == cli_verify(tmp_path, net.directory / devnet.TRUST_FILE, text, inputs)
    lines = check(net.attested, net.inputs, trust=root, quorum=1)
    assert lines == cli_verify(tmp_path, tmp_path / "trust.json", net.attested, net.inputs, 1)
    assert [line.split(".")[0] for line in lines[:-1]] == ["1", "1+", "2", "4"]
    # a trust root that says node 2's witness is run by node 1's operator, and witness lines
    # that say otherwise: the root's labels win, as in the CLI, so the quorum is not met
    labelled = TrustRoot.of(net.trust, operators={net.witnesses[1]: net.trust[0]}).to_json()
    (tmp_path / "labelled.json").write_text(labelled)
    lines = check(net.attested, net.inputs, trust=labelled, quorum=1,
                  witnesses=f"{net.witnesses[1]} someone-else")  # fmt: skip
    expected = cli_verify(tmp_path, tmp_path / "labelled.json", net.attested, net.inputs, 1,
                          witnesses=f"{net.witnesses[1]} someone-else")  # fmt: skip
    assert lines == expected
    assert lines[-1].startswith("error: step 1+ (witnesses): a quorum of 1 needs"), lines


def cli_verify(
    tmp_path: Path,
    trust: Path,
    text: str,
    inputs: dict[str, Any],
    quorum: int = 0,
    witnesses: str = "",
) -> list[str]:
    """The lines ``verinfer verify`` prints (its steps, then ``valid: ...`` or the error)."""
    (tmp_path / "bundle.json").write_text(text)
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))
    (tmp_path / "witnesses.txt").write_text(witnesses)
    done = subprocess.run(
        [sys.executable, "-c", "from verinfer.cli import main; main()", "verify",
         str(tmp_path / "bundle.json"), "--trust", str(trust), "--inputs",
         str(tmp_path / "inputs.json"), "--quorum", str(quorum),
         *(["--witnesses", str(tmp_path / "witnesses.txt")] if witnesses else [])],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "COLUMNS": "1000", "NO_COLOR": "1"},
    )  # fmt: skip
    lines = [line.removeprefix("✓ ") for line in done.stdout.splitlines()]
    return lines + done.stderr.splitlines()


def test_try_it_runs_the_model_and_verifies_its_answer_in_the_page(
    net: Net, browser: WebDriver
) -> None:
    open_page(browser, net.url, "models", "tbody a")
    browser.find_element(By.LINK_TEXT, "alice/iris@1").click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "form.tryit"))
    assert (
        "signed by the publisher key it names (checked here)"
        in browser.find_element(By.ID, "view").text
    )
    fields = browser.find_elements(By.CSS_SELECTOR, "form.tryit input[type=number]")
    assert len(fields) == 4
    for field, value in zip(fields, X[0], strict=True):
        field.clear()
        field.send_keys(str(float(value)))
    browser.find_element(By.CSS_SELECTOR, "form.tryit button").click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".answer .verdict"))
    assert browser.find_element(By.CSS_SELECTOR, ".answer .badge").text == "verified"
    steps = [li.text for li in browser.find_elements(By.CSS_SELECTOR, ".answer ol.steps li")]
    assert [s.split(".")[0] for s in steps[:4]] == ["1", "2", "4", "5"], steps
    assert steps[-1].startswith("valid: attested answer of model ")
    # the bundle the page shows is the node's real answer for these inputs: Python agrees
    text = browser.execute_script("return document.querySelector('pre.bundle').textContent")
    outputs = json.loads(browser.execute_script(
        "return document.querySelector('pre.outputs').textContent"))  # fmt: skip
    verdict = python_verdict(text, {"trusted": net.trust, "inputs": tensors.encode_json({"X": X}),
                                    "outputs": outputs})  # fmt: skip
    assert verdict["ok"], verdict
    assert list(steps[:-1]) == verdict["steps"]
    assert outputs == net.outputs  # the same inputs as the fixture's: the same answer


def test_try_it_classifies_an_uploaded_picture(
    net: Net, browser: WebDriver, tmp_path: Path
) -> None:
    colour = (255, 128, 0)
    picture = tmp_path / "orange.png"
    picture.write_bytes(_png(20, 10, colour))
    open_page(browser, net.url, "model/alice/pixels@1", "form.tryit")
    browser.find_element(By.CSS_SELECTOR, "form.tryit input[type=file]").send_keys(str(picture))
    browser.find_element(By.CSS_SELECTOR, "form.tryit button").click()
    wait_for(
        browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".answer .verdict, .answer .error")
    )
    assert browser.find_element(By.CSS_SELECTOR, ".answer .badge").text == "verified"
    # the page sent the picture resized, scaled to [0, 1] and normalized as for ImageNet:
    # a picture of one colour is that colour everywhere, so the model's means are exactly it
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = ((np.array(colour) / 255 - mean) / std).astype(np.float32)
    image = np.broadcast_to(expected[None, :, None, None], (1, 3, 8, 8)).astype(np.float32)
    text = browser.execute_script("return document.querySelector('pre.bundle').textContent")
    receipt = json.loads(json.loads(text)["receipt"])
    assert receipt["inputs"] == tensors.map_digest({"image": image})
    outputs = json.loads(
        browser.execute_script("return document.querySelector('pre.outputs').textContent")
    )
    scores = tensors.decode_json(outputs)["scores"]
    np.testing.assert_allclose(scores[0], expected, rtol=1e-6)
    assert "largest at index 0" in browser.find_element(By.CSS_SELECTOR, ".answer ul").text


def test_network_models_and_log_pages_show_the_nodes_state(net: Net, browser: WebDriver) -> None:
    with httpx.Client(base_url=net.url) as http:
        summary = http.get("/v1/explorer/network").json()
        policy = http.get("/").headers["content-security-policy"]
        assert policy.startswith("default-src 'self'")
        assert "frame-ancestors 'none'" in policy
        for path in ("/explorer/verify.js", "/explorer/app.js", "/explorer/style.css"):
            served = http.get(path)  # each file under the page's policy too
            assert served.status_code == 200
            assert served.headers["content-security-policy"] == policy, path
    open_page(browser, net.url, "network")
    text = browser.find_element(By.ID, "view").text
    assert net.trust[0] in text
    assert summary["peers"][0] in text
    assert net.witnesses[1].split("+")[0] in text  # node 2's witness cosigned node 1's log
    # the node states those cosignatures; the page holds no witness key, so it says so
    assert "cosignature line(s), as the node states them (not checked here" in text
    assert "No evidence held" in text
    # each witnessed log's latest checkpoint, with when this node's witness cosigned it
    assert summary["witnessed"]
    assert all(isinstance(w["cosigned_at"], float) for w in summary["witnessed"])
    assert re.search(r"\d+ (s|min) ago", text), text
    open_page(browser, net.url, "models?q=nothing-like-this", "p")
    assert "No model matches" in browser.find_element(By.ID, "view").text
    open_page(browser, net.url, "models?q=iris", "tbody a")
    open_page(browser, net.url, "log", ".path li")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#view .badge.ok"))
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart polyline")
    size = summary["node"]["size"]
    path = browser.find_elements(By.CSS_SELECTOR, "ol.path li")
    assert len(path) >= 3  # leaf, at least one proof hash, the signed root
    # an entry by its leaf hash, and consistency between two sizes, checked in the page
    entry = http_entry(net.url, 0)
    leaf = base64.b64encode(merkle.leaf_hash(entry)).decode()
    field = browser.find_element(By.NAME, "entry")
    field.clear()
    field.send_keys(leaf, Keys.ENTER)
    wait_for(browser, lambda d: "Entry 0" in d.find_element(By.ID, "view").text)
    old = browser.find_element(By.NAME, "old")
    old.clear()
    old.send_keys("1")
    browser.find_element(By.NAME, "size").send_keys(Keys.ENTER)
    wait_for(browser, lambda d: "consistent" in d.find_element(By.ID, "view").text)
    assert (
        f"size 1 is a prefix of the signed tree of size {size}"
        in browser.find_element(By.ID, "view").text
    )


def http_entry(url: str, index: int) -> bytes:
    with httpx.Client(base_url=url) as http:
        return http.get(f"/v1/log/entries/{index}").content


def test_keyboard_alone_reaches_every_page(net: Net, browser: WebDriver) -> None:
    open_page(browser, net.url, "network")
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)  # the skip link, then the brand, then the pages
    assert browser.switch_to.active_element.text == "Skip to content"
    for _ in range(4):
        browser.switch_to.active_element.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "Log"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#view svg.chart"))
    assert browser.find_element(By.CSS_SELECTOR, "nav a[aria-current=page]").text == "Log"


def test_no_request_leaves_for_another_host_and_pages_fit_a_phone(
    net: Net, browser: WebDriver
) -> None:
    pages = ["network", "models", "model/alice/iris@1", "log", "verify"]
    for width, scheme in ((1280, "light"), (390, "light"), (1280, "dark")):
        browser.set_window_size(width, 900)
        browser.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
        )
        for page in pages:
            open_page(browser, net.url, page)
            time.sleep(0.3)  # let the page's own requests finish
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, (page, width, overflow)
            background = browser.execute_script(
                "return getComputedStyle(document.body).backgroundColor"
            )
            assert background == {"light": "rgb(251, 251, 250)", "dark": "rgb(20, 22, 26)"}[scheme]
            if SCREENSHOTS:
                Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
                name = page.replace("/", "-").replace("@", "-")
                suffix = "-dark" if scheme == "dark" else ""
                browser.save_screenshot(str(Path(SCREENSHOTS) / f"{name}-{width}{suffix}.png"))
    browser.set_window_size(1280, 900)
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    here = urlsplit(net.url).netloc
    seen = set()
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            seen.add(url)
            scheme = urlsplit(url).scheme
            assert scheme in ("data", "blob") or urlsplit(url).netloc == here, url
    assert any(u.endswith("/explorer/verify.js") for u in seen), sorted(seen)[:10]
    # and only the public, read-only API (and try it's own inference, answered to its requester):
    # never a tensor, never an admin route
    public = ("/v1/infer", "/v1/node", "/v1/explorer/network", "/v1/evidence", "/v1/models",
              "/v1/manifests/", "/v1/repositories/", "/v1/log/", "/v1/zk/",
              "/explorer/")  # fmt: skip
    for url in seen:
        path = urlsplit(url).path
        assert urlsplit(url).scheme in ("data", "blob") or path == "/" or path.startswith(public)
        assert not path.startswith("/v1/tensors"), url
    console = [  # but a model's zk endorsement, looked up, is absent (404)
        e for e in browser.get_log("browser")
        if e["level"] == "SEVERE" and not ("/v1/zk/" in e["message"] and "404" in e["message"])
    ]  # fmt: skip
    assert not console, console


def test_a_node_that_equivocates_is_shown_convicted(net: Net, browser: WebDriver) -> None:
    """Node 2 signs a second tree of a size it already published; node 1's witness hears of
    both (gossip) and keeps the evidence; the network page shows node 2 convicted and checks
    the two signatures in the page. (Runs last: it changes what the network page shows.)"""
    nodes = devnet.read(net.directory)
    liar = note.Signer((Path(nodes[1]["data"]) / "node.skey").read_text().strip())
    with httpx.Client(base_url=nodes[1]["url"]) as http:
        genuine = http.get("/v1/log/checkpoint/1").text
    checkpoint, _ = note.verify_checkpoint(genuine, [nodes[1]["vkey"]])
    forged = liar.sign(note.Checkpoint(checkpoint.origin, 1, bytes(32)).text)
    with httpx.Client(base_url=net.url) as http:
        assert http.post("/v1/gossip", content=genuine).json() == {"equivocation": None}
        assert http.post("/v1/gossip", content=forged).json()["equivocation"]["kind"] == (
            "equivocation"
        )
    open_page(browser, net.url, "network", ".evidence .badge")
    shown = browser.find_element(By.CSS_SELECTOR, ".evidence").text
    assert shown.startswith(f"Convicted: {checkpoint.origin} — equivocation"), shown
    assert "two signed trees of size 1, checked here with the log's known key" in shown
    assert browser.find_elements(By.CSS_SELECTOR, ".evidence .badge.ok")
