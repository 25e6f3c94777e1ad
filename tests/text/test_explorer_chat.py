"""The explorer's chat box (a language model's "try it") in a real browser against a real node.

Headless Chromium opens the chat model's page on the session's node (tests/text/conftest.py),
asks a question with the keyboard, sees the tokens stream in, and the page verifies the answer
with verify.js: the bundle (signature, inclusion), the generation record's digests, the
committed candidates and the sampler replayed on them. A changed stream is refused in the page;
the sampler vectors and records a dishonest node signs get the same verdict in the browser as
from ``verinfer.modes.generation.verify_generation``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from text_support import TextNode

from verinfer.hub import Manifest

sys.path.insert(0, str(Path(__file__).parents[1] / "explorer"))
from test_explorer_browser import SCREENSHOTS, browser, in_browser, open_page

from verinfer.errors import VerificationError
from verinfer.modes.generation import verify_generation
from verinfer.node.text import Finished, TextModels
from verinfer.text.chat import Tokenizer
from verinfer.text.generation import Generation
from verinfer.text.sampler import Sampling
from verinfer.verify import Bundle

__all__ = ["browser"]  # the explorer tests' module-scoped Chromium, used here as a fixture

VECTORS = Path(__file__).parents[1] / "vectors" / "sampler.json"
MODEL = "alice/smollm2@1"


def wait_long(driver: WebDriver, condition: Callable[[WebDriver], Any]) -> Any:
    """Generation on two shared cores can be slow: a wider wait than the explorer tests'."""
    return WebDriverWait(driver, 240, poll_frequency=0.1).until(condition)


def ask(driver: WebDriver, question: str, max_tokens: int) -> Any:
    """Type a question with the keyboard (Enter sends) at temperature 0; the new turn's verdict."""
    turns = len(driver.find_elements(By.CSS_SELECTOR, ".chat .turn[data-pieces]"))
    for name, value in (("temperature", "0"), ("max_tokens", str(max_tokens))):
        field = driver.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    box = driver.find_element(By.NAME, "message")
    box.send_keys(question)
    box.send_keys(Keys.ENTER)
    done = f".chat .turn[data-pieces]:nth-of-type({3 * (turns + 1)})"
    wait_long(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f"{done} .badge, {done} .error"))
    turn = driver.find_element(By.CSS_SELECTOR, done)
    assert not turn.find_elements(By.CSS_SELECTOR, ".error"), turn.text
    return turn


def test_the_chat_box_streams_an_answer_and_verifies_it_in_the_page(
    text_node: TextNode, browser: WebDriver
) -> None:
    browser.set_window_size(390, 900)
    try:
        open_page(browser, text_node.url, f"model/{MODEL}", ready="textarea[name='message']")
        turn = ask(browser, "What is the capital of France?", 12)
        said = browser.find_elements(By.CSS_SELECTOR, ".chat .said")[-1].text
        assert "Paris" in said, said
        assert int(turn.get_attribute("data-pieces") or 0) > 1  # shown piece by piece
        badge = turn.find_element(By.CSS_SELECTOR, ".badge")
        assert badge.text == "verified"
        assert "ok" in (badge.get_attribute("class") or "")
        steps = [li.text for li in turn.find_elements(By.CSS_SELECTOR, "ol.steps li")]
        assert steps[0].startswith("1. checkpoint of size")
        assert steps[1].startswith("2. receipt is")
        assert [s[:3] for s in steps[2:6]] == ["4. ", "5. ", "G1.", "G2."], steps
        assert "ended by the end-of-turn token and not before" in steps[6], steps
        manifest = text_node.manifest
        assert steps[7] == f"G4. manifest {manifest.cid} of model {manifest.model}"
        assert "Receipt verified; sampler replayed" in turn.text
        assert "Not checked here: the text" in turn.text  # the page says what it did not check
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0
        console = [  # but the model's zk endorsement, looked up, is absent (404)
            e for e in browser.get_log("browser")
            if e["level"] == "SEVERE" and not ("/v1/zk/" in e["message"] and "404" in e["message"])
        ]  # fmt: skip
        assert not console, console
        if SCREENSHOTS:  # make screenshots
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            turn.location_once_scrolled_into_view  # noqa: B018 - scrolls the verdict into view
            browser.save_screenshot(str(Path(SCREENSHOTS) / "chat-390.png"))
        # the answer the page offers for download verifies offline in Python as well
        answer = json.loads(turn.find_element(By.CSS_SELECTOR, "pre.bundle").get_attribute(
            "textContent") or "")  # fmt: skip
        generation = Generation.from_json(answer["generation"])
        tokenizer = _tokenizer(text_node)
        verify_generation(Bundle.from_json(answer["bundle"]), generation, [text_node.node.vkey],
                          ends=[tokenizer.token_id("<|im_end|>")],
                          detokenize=tokenizer.decode)  # fmt: skip
        assert generation.sampling.temperature == 0
        assert generation.sampling.top_k == 8  # every parameter sent, the seed drawn by the page
        assert 0 <= generation.sampling.seed < 1 << 32
        assert generation.sampling.max_tokens == 12

        # a stream changed on the way (one generated token) is refused in the page: step 5
        browser.execute_script("""
            const original = window.fetch;
            window.fetch = async (...args) => {
              const response = await original(...args);
              if (!String(args[0]).endsWith("/chat/completions")) return response;
              const text = await response.text();
              const changed = text.replace(/"tokens": \\[(\\d+)/, (_, t) => `"tokens": [${+t + 1}`);
              return new Response(changed, { status: response.status, headers: response.headers });
            };""")
        tampered = ask(browser, "And of Italy?", 3)
        badge = tampered.find_element(By.CSS_SELECTOR, ".badge")
        assert badge.text == "failed"
        assert "bad" in (badge.get_attribute("class") or "")
        assert "error: step 5 (outputs)" in tampered.text
        assert "Verification failed" in tampered.text
        assert "Receipt verified" not in tampered.text
    finally:
        browser.set_window_size(1280, 900)


def _tokenizer(text_node: TextNode) -> Tokenizer:
    """The chat model's tokenizer, as the node stores it."""
    text = text_node.manifest.text
    assert text is not None
    return Tokenizer(text_node.node.hub.blobs.get(text["tokenizer"]))


def _python_verdict(text_node: TextNode, bundle: str, record: str) -> dict[str, Any]:
    steps: list[str] = []
    tokenizer = _tokenizer(text_node)
    try:
        generation = Generation.from_text(record)
        verify_generation(
            Bundle.from_json(bundle), generation, [text_node.node.vkey],
            ends=[tokenizer.token_id("<|im_end|>")], detokenize=tokenizer.decode,
            manifest=text_node.manifest, report=steps.append,
        )  # fmt: skip
    except VerificationError as exc:
        return {"ok": False, "steps": steps, "error": str(exc)}
    return {"ok": True, "steps": steps, "error": None}


def test_the_page_replays_the_sampler_and_judges_forged_records_as_python_does(
    text_node: TextNode, browser: WebDriver
) -> None:
    open_page(browser, text_node.url, "verify")
    vectors = json.loads(VECTORS.read_text())
    found = in_browser(browser, """
        const [d] = args, out = [];
        for (const c of d.cases) {
          out.push([await v.choose(d.ids, d.values, c.sampling, c.position),
                    await v.uniform(c.sampling.seed, c.position)]);
        }
        return out;""", vectors)  # fmt: skip
    assert found == [[c["token"], c["uniform"]] for c in vectors["cases"]]
    assert len(found) >= 20

    texts = TextModels(text_node.node)
    chat = texts.chat_model("alice/smollm2")
    prompt = texts.prompt(chat, messages=[{"role": "user", "content": "Tell me a story."}])
    sampling = Sampling(temperature=1.0, seed=5, max_tokens=6)
    finished = list(texts.generate(chat, prompt, sampling))[-1]
    assert isinstance(finished, Finished)
    g = finished.generation
    eos = _tokenizer(text_node).token_id("<|im_end|>")

    def signed(forged: Generation) -> tuple[str, str]:
        """The node signs (logs) a forged record: what a dishonest node can do."""
        again = texts._log(finished.manifest, forged, "", None, "private")
        return again.bundle.to_json(), json.dumps(forged.to_json())

    position = next(i for i in range(len(g.tokens)) if int(g.top_ids[i, 3]) != g.tokens[i])
    replaced = list(g.tokens)
    replaced[position] = int(g.top_ids[position, 3])
    unordered = g.top_logits.copy()
    row = next(i for i in range(len(g.tokens)) if unordered[i, 0] != unordered[i, 1])
    unordered[row, [0, 1]] = unordered[row, [1, 0]]
    honest = (finished.bundle.to_json(), json.dumps(g.to_json()))
    hot = json.loads(honest[1])
    hot["sampling"]["temperature"] = 3.0
    cases = {
        "honest": honest,
        "a replaced token": signed(dataclasses.replace(g, tokens=tuple(replaced))),
        "another seed claimed": signed(
            dataclasses.replace(g, sampling=dataclasses.replace(g.sampling, seed=6))),
        "logits not highest first": signed(dataclasses.replace(g, top_logits=unordered)),
        "cut short, finish length": signed(dataclasses.replace(
            g, tokens=g.tokens[:3], top_ids=g.top_ids[:3], top_logits=g.top_logits[:3],
            finish="length")),
        "changed after signing": (honest[0], json.dumps(
            dataclasses.replace(g, tokens=tuple(replaced)).to_json())),
        "temperature 3": (honest[0], json.dumps(hot)),
        "cut short, finish stop": signed(dataclasses.replace(
            g, tokens=g.tokens[:3], top_ids=g.top_ids[:3], top_logits=g.top_logits[:3],
            finish="stop")),
        "not the record's bundle": (signed(dataclasses.replace(g, finish="stop"))[0], honest[1]),
    }  # fmt: skip
    verdicts = in_browser(browser, """
        const [cases, vkey, ends, manifest] = args, out = {};
        for (const [name, [bundle, record]] of Object.entries(cases)) {
          const r = await v.verifyGeneration(bundle, record, { trusted: [vkey], ends, manifest });
          out[name] = { ok: r.ok, steps: r.steps, error: r.error };
        }
        const [bundle, record] = cases.honest, other = { ...manifest, cid: manifest.model };
        const r = await v.verifyGeneration(bundle, record,
          { trusted: [vkey], ends, manifest: other });
        out["another manifest"] = { ok: r.ok, steps: r.steps, error: r.error };
        return out;""", cases, text_node.node.vkey, [eos],
        {"cid": text_node.manifest.cid, "model": text_node.manifest.model})  # fmt: skip
    assert verdicts.pop("another manifest")["error"] == (
        "step G4 (manifest): not the receipt's manifest and model"
    )
    for name, (bundle, record) in cases.items():
        py, js = _python_verdict(text_node, bundle, record), verdicts[name]
        # the G3 line says in the page what it checked without the tokenizer
        js_steps = [s for s in js["steps"] if not s.startswith("G3.")]
        py_steps = [s for s in py["steps"] if not s.startswith("G3.")]
        assert (js["ok"], js["error"], js_steps) == (py["ok"], py["error"], py_steps), name
    assert verdicts["honest"]["ok"]
    expected = {
        "a replaced token": "step G2 (sampler)", "logits not highest first": "step G1",
        "cut short, finish length": "step G3 (end): finish 'length'",
        "cut short, finish stop": "step G3 (end): finish 'stop', but the last token",
        "changed after signing": "step 5 (outputs)",
        "temperature 3": "malformed generation: temperature must be in [0, 2], got 3.0",
        "not the record's bundle": "step 5 (outputs)",
    }  # fmt: skip
    for name, start in expected.items():
        assert (verdicts[name]["error"] or "").startswith(start), (name, verdicts[name])
    assert np.asarray(g.top_logits).dtype == np.float16


def test_the_embed_box_verifies_its_vectors_in_the_page(
    text_node: TextNode, embedding_manifest: Manifest, browser: WebDriver
) -> None:
    page = f"model/{embedding_manifest.repository}@{embedding_manifest.version}"
    for tamper in (False, True):
        open_page(browser, text_node.url, page, ready="textarea[name='texts']")
        if tamper:  # one number of the first vector changed on the way: step 5 fails
            browser.execute_script("""
                const original = window.fetch;
                window.fetch = async (...args) => {
                  const response = await original(...args);
                  if (!String(args[0]).endsWith("/embeddings")) return response;
                  const body = JSON.parse(await response.text());
                  body.data[0].embedding[0] += 0.25;
                  return new Response(JSON.stringify(body),
                    { status: response.status, headers: response.headers });
                };""")
        browser.find_element(By.CSS_SELECTOR, ".tryit button[type='submit']").click()
        wait_long(
            browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".answer .badge, .answer .error")
        )
        answer = browser.find_element(By.CSS_SELECTOR, ".answer")
        assert not answer.find_elements(By.CSS_SELECTOR, ".error"), answer.text
        badge = answer.find_element(By.CSS_SELECTOR, ".badge")
        assert "2 vector(s) of 384" in answer.text
        if tamper:
            assert badge.text == "failed"
            assert "error: step 5 (outputs)" in answer.text
        else:
            assert badge.text == "verified"
            steps = [li.text[:2] for li in answer.find_elements(By.CSS_SELECTOR, "ol.steps li")]
            assert steps[:4] == ["1.", "2.", "4.", "5."]
            similarity = answer.find_element(By.CSS_SELECTOR, ".similarity").text
            assert float(similarity.rsplit(" ", 1)[1]) > 0.5  # a cat on a mat, a kitten on a rug
