// The explorer's pages: network, models (with "try it"), log, verify. Reads this node's public
// JSON API only; every verdict shown is computed here, by verify.js.
import * as v from "./verify.js";

const view = document.getElementById("view");

// h("p", {class: "x"}, "text", child...): an element; text is never parsed as HTML
function h(tag, attrs = {}, ...children) {
  const svg = ["svg", "polyline", "line", "text"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [k, value] of Object.entries(attrs)) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) el.setAttribute(k, value);
  }
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined) el.append(c);
  return el;
}

// exact: JSON read as Python reads it (verify.js's loads: integers exact), for what is verified
async function api(path, options, exact = false) {
  const response = await fetch(path, options);
  const type = response.headers.get("content-type") || "";
  const text = await response.text();
  const body = !type.includes("json") ? text : exact ? v.loads(text, "last") : JSON.parse(text);
  if (!response.ok) throw new Error(body.message || `${response.status} ${path}`);
  return body;
}

const facts = (pairs) => h("dl", { class: "facts" },
  pairs.filter(([, x]) => x !== undefined).map(([k, x]) => [h("dt", {}, k), h("dd", {}, x)]));
const code = (text) => h("code", {}, String(text));
const card = (...children) => h("section", { class: "card" }, ...children);
const badge = (ok, text) => h("span", { class: `badge ${ok ? "ok" : "bad"}`, role: "status" },
  text ?? (ok ? "verified" : "failed"));

function ago(seconds) {
  const s = Math.max(0, Math.round(Date.now() / 1000 - Number(seconds)));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

// the signature lines of a note after its text: [{name, timestamp | null}]
function signers(signed) {
  const block = signed.slice(signed.lastIndexOf("\n\n") + 2).trimEnd();
  return block.split("\n").map((line) => {
    const [name, sig] = line.slice(2).split(" ");
    const raw = v.b64decode(sig);
    const stamp = raw && raw.length === 4 + 72
      ? Number(new DataView(raw.buffer).getBigUint64(4)) : null;
    return { name, timestamp: stamp };
  });
}

// the verdict of verify.js as the CLI prints it
function verdictView(result) {
  return h("div", { class: "verdict" },
    badge(result.ok),
    h("ol", { class: "steps" },
      result.steps.map((line) => h("li", { class: "ok" }, line)),
      result.ok ? h("li", { class: "ok" }, result.valid)
        : h("li", { class: "bad" }, `error: ${result.error}`)));
}

let identity = null;
const node = async () => (identity ??= await api("/v1/node"));

// ---------------------------------------------------------------------------------------------
// Network

async function networkPage() {
  const [net, evidence] = await Promise.all([api("/v1/explorer/network"), api("/v1/evidence")]);
  const own = net.cosigned ? signers(net.cosigned).slice(1) : [];
  const latest = v.parseCheckpoint(net.checkpoint.slice(0, net.checkpoint.indexOf("\n\n") + 1));
  return [
    h("h1", {}, "Network"),
    card(h("h2", {}, "This node"), facts([
      ["node key", code(net.node.vkey)], ["log", code(net.node.origin)],
      ["witness key", code(net.node.witness)], ["engine", code(net.node.engine)],
      ["latest checkpoint", `size ${latest.size} (${net.checkpoints} checkpoints issued)`],
      ["cosigned", net.cosigned ? `size ${v.parseCheckpoint(
        net.cosigned.slice(0, net.cosigned.indexOf("\n\n") + 1)).size}: ${own.length} cosignature `
        + "line(s), as the node states them (not checked here: the page knows no witness keys)"
        : "not yet cosigned by any peer's witness"],
    ])),
    h("h2", {}, "Witness cosignature lines on this node's log"),
    h("p", { class: "muted" }, "As this node states them: unverified counts. To check a quorum of "
      + "witnesses you trust, verify a bundle with their keys (Verify)."),
    own.length ? h("div", { class: "table" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "witness (unverified)"), h("th", {}, "cosigned"))),
      h("tbody", {}, own.map((s) => h("tr", {}, h("td", {}, code(s.name)),
        h("td", {}, s.timestamp ? ago(s.timestamp) : "-"))))))
      : h("p", { class: "muted" }, "None gathered yet."),
    h("h2", {}, "Peers"),
    net.peers.length ? h("ul", {}, net.peers.map((p) => h("li", {}, code(p))))
      : h("p", { class: "muted" }, "This node has no peers."),
    h("h2", {}, "Logs this node's witness cosigned"),
    net.witnessed.length ? h("div", { class: "table" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "log"), h("th", {}, "latest size"),
        h("th", {}, "cosigned here"), h("th", {}, "key"))),
      h("tbody", {}, net.witnessed.map((w) => h("tr", {}, h("td", {}, code(w.origin)),
        h("td", {}, String(w.size)),
        h("td", {}, w.cosigned_at == null ? "not since this node started"
          : ago(w.cosigned_at)),
        h("td", {}, code(w.vkey)))))))
      : h("p", { class: "muted" }, "None yet."),
    h("h2", {}, "Evidence of misbehaviour"),
    evidence.length ? (await Promise.all(evidence.map(async (e) => {
      const [held, verdict] = await checkEvidence(e, net);
      return card(h("p", { class: "evidence" }, h("strong", { class: held ? "convicted" : "" },
        `${held ? "Convicted" : "Evidence held against"}: ${e.log ?? "a node"}`),
      ` — ${e.kind ?? "evidence"} `, verdict),
      h("details", {}, h("summary", {}, "the evidence (check it: verinfer evidence verify)"),
        h("pre", {}, JSON.stringify(e, null, 1))));
    })))
      : h("p", {}, "No evidence held: no node was caught lying to this node's witness."),
  ];
}

// equivocation is checked here: two checkpoints of one log and size, two roots, both signed
// by the log's key as this node knows it (its own, or the one its witness follows) — never the
// key the evidence names. Other kinds need a model re-run (verinfer evidence verify).
// [convicted here?, what to show]
async function checkEvidence(e, net) {
  if (e.kind !== "equivocation") {
    return [false, h("span", { class: "muted" }, "(checked by this node, not here: verinfer evidence verify)")];
  }
  const known = e.log === net.node.origin ? net.node.vkey : net.witnessed.find((w) => w.origin === e.log)?.vkey;
  if (!known) return [false, badge(false, `not checked: this node knows no key for log ${e.log}`)];
  try {
    const size = await v.verifyEquivocation(e, known);
    return [true, badge(true, `two signed trees of size ${size}, checked here with the log's known key`)];
  } catch (exc) { return [false, badge(false, `does not hold: ${exc.message}`)]; }
}

// ---------------------------------------------------------------------------------------------
// Models

async function modelsPage(query) {
  const q = query.get("q") ?? "";
  const models = await api("/v1/models" + (q ? `?q=${encodeURIComponent(q)}` : ""));
  const search = h("input", { type: "search", name: "q", value: q, "aria-label": "Search models" });
  return [
    h("h1", {}, "Models"),
    h("form", { role: "search", onsubmit: (e) => {
      e.preventDefault(); location.hash = `#/models?q=${encodeURIComponent(search.value)}`;
    } }, search, h("button", { type: "submit" }, "Search")),
    models.length ? h("div", { class: "table" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "model"), h("th", {}, "description"), h("th", {}, "published"))),
      h("tbody", {}, models.map((m) => h("tr", {},
        h("td", {}, h("a", { href: `#/model/${m.repository}@${m.version}` }, `${m.repository}@${m.version}`)),
        h("td", {}, m.description), h("td", {}, h("time", { datetime: m.time }, m.time.slice(0, 10))))))))
      : h("p", { class: "muted" }, q ? `No model matches “${q}”.` : "No model is published here yet."),
  ];
}

// the JSON form of a tensor from its elements in row-major order
function nested(spec, shape, flat) {
  const nest = (at, dims) => (dims.length === 0 ? flat[at]
    : Array.from({ length: dims[0] }, (_, i) => nest(at * dims[0] + i, dims.slice(1))));
  return { dtype: spec.dtype, shape, data: nest(0, shape) };
}

function describe(spec) {
  const dims = spec.shape ? spec.shape.map((d) => d ?? "?").join(", ") : "any shape";
  return `${spec.name}: ${spec.dtype}[${dims}]`;
}

async function modelPage(ref) {
  const signed = await api(`/v1/manifests/${ref}`);
  const body = JSON.parse(signed.slice(0, signed.indexOf("\n")));
  let signature;
  try {
    await v.verifyNote(signed, [await v.parseKey(body.publisher)]);
    signature = badge(true, "signed by the publisher key it names (checked here)");
  } catch (exc) { signature = badge(false, `bad signature: ${exc.message}`); }
  const [owner, name] = body.repository.split("/");
  let history = [];
  try {
    history = (await api(`/v1/repositories/${owner}/${name}/changes`)).changes
      .map((c) => JSON.parse(c.slice(0, c.indexOf("\n"))));
  } catch { /* a model fetched from a peer may have no history here */ }
  const d = body.determinism ?? {};
  const manifestCid = await v.cidCompute(new TextEncoder().encode(signed));
  let zk = "none endorsed";
  try {
    const addendum = await api(`/v1/zk/${manifestCid}`);
    await v.verifyNote(addendum, [await v.parseKey(body.publisher)]);
    zk = "a circuit endorsed by the publisher (signature checked here): answers in mode zk";
  } catch { /* none, or not the publisher's: nothing to show */ }
  return [
    h("h1", {}, `${body.repository}@${body.version}`),
    card(h("p", {}, signature), facts([
      ["description", body.description], ["publisher", code(body.publisher)],
      ["published", body.time], ["model", code(body.model)],
      ["size", `${body.size.toLocaleString("en")} bytes, ${body.parameters.toLocaleString("en")} parameters`],
      ["format", `${body.format}, IR ${body.ir_version}, opsets ${JSON.stringify(body.opsets)}`],
      ["inputs", body.inputs.map(describe).join("; ")],
      ["outputs", body.outputs.map(describe).join("; ")],
      ["operators", body.operators.join(", ")],
      ["determinism", d.bit_identical === true ? `bit-identical over ${d.runs} runs, threads ${JSON.stringify(d.threads)} (measured on ${d.engine})`
        : d.bit_identical === false ? `not bit-identical${d.nondeterministic?.length ? ` (random operators: ${d.nondeterministic.join(", ")})` : ""}`
          : "not measured"],
      ["tolerance", d.tolerance ? `${d.tolerance.abs} across kernel classes ${d.tolerance.classes.join(", ")}` : "none declared"],
      ["zk", zk], ["manifest", code(manifestCid)],
      ["license", body.license || "-"], ["tags", body.tags.join(", ") || "-"],
    ])),
    h("h2", {}, "Version history"),
    history.length ? h("ol", {}, history.map((c) => h("li", {},
      c.action === "publish" ? `published ${c.version} ` : `tagged ${c.tag} → ${c.version} `,
      h("span", { class: "muted" }, c.time ?? "")))) : h("p", { class: "muted" }, "Not kept on this node."),
    h("h2", {}, "Try it"),
    body.text?.kind === "chat" ? chatBox(ref, body, manifestCid) : body.text?.kind === "embedding" ? embedBox(ref, body)
      : tryIt(ref, body),
  ];
}

// a chat with a language model: the question goes to this node's OpenAI-compatible route,
// streamed (server-sent events); the tokens are shown as they come, and the last event's
// bundle and generation record are verified here (verify.js: verifyGeneration)
function chatBox(ref, body, manifestCid) {
  const messages = [];
  let ends = null; // the end-of-turn ID from the manifest's tokenizer, fetched and CID-checked once
  const endsOf = () => (ends ??= endOfTurn(body.text).catch(() => null));
  const log = h("div", { class: "chat", "aria-live": "polite" });
  const question = h("textarea", { name: "message", rows: 3, required: true,
    "aria-label": "Your message (Enter sends, Shift+Enter for a new line)",
    placeholder: "Ask something… (Enter sends, Shift+Enter for a new line)" });
  const temperature = h("input", { type: "number", name: "temperature", min: 0, max: 2, step: "any", value: 0 });
  const maxTokens = h("input", { type: "number", name: "max_tokens", min: 1, max: 512, step: 1, value: 32 });
  const send = h("button", { type: "submit" }, "Send");
  const form = h("form", { class: "chatform", onsubmit: (e) => { e.preventDefault(); ask(); } },
    h("label", { class: "wide" }, "Message", question),
    h("label", {}, "temperature", temperature), h("label", {}, "max tokens", maxTokens), send);
  question.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
  });

  async function ask() {
    const content = question.value.trim();
    if (!content || send.disabled) return;
    question.value = "";
    send.disabled = true;
    messages.push({ role: "user", content });
    const said = h("p", { class: "said" }, "");
    const turn = h("div", { class: "turn", "data-pieces": "0" });
    log.append(h("div", { class: "turn user" }, h("strong", {}, "You: "), content),
      h("div", { class: "turn assistant" }, h("strong", {}, "Model: "), said), turn);
    let text = "", pieces = 0, last = null;
    // every sampling parameter is sent, the seed drawn here: a parameter left out would be
    // the node's to choose (a seed it could try until the answer suits it)
    const asked = { temperature: Number(temperature.value), top_p: 1, top_k: 8,
      seed: crypto.getRandomValues(new Uint32Array(1))[0], max_tokens: Number(maxTokens.value) };
    try {
      const response = await fetch("/v1/chat/completions", { method: "POST",
        headers: { "content-type": "application/json", accept: "text/event-stream" },
        body: JSON.stringify({ model: ref, messages, stream: true, ...asked }) });
      if (!response.ok) {
        const refused = await response.text();
        let why = `${response.status}`;
        try { why = JSON.parse(refused).message ?? why; } catch { /* not JSON */ }
        throw new Error(why);
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
            const chunk = v.loads(line.slice(6), "last"); // exact integers for what is verified
            if (chunk.verinfer) last = chunk;
            const piece = chunk.choices?.[0]?.delta?.content;
            if (piece) {
              text += piece;
              pieces += 1;
              said.textContent = text;
              turn.dataset.pieces = String(pieces);
            }
          }
        }
      }
      if (!last) throw new Error("the stream ended without its bundle");
      messages.push({ role: "assistant", content: text });
      const evidence = last.verinfer;
      const bundle = v.dumps(evidence.bundle), record = v.dumps(evidence.generation);
      const known = await endsOf();
      const result = await v.verifyGeneration(bundle, evidence.generation, { trusted: [(await node()).vkey],
        ends: known ?? undefined, manifest: { cid: manifestCid, model: body.model } });
      const stated = evidence.generation.sampling ?? {};
      const other = Object.keys(asked).filter((k) => Number(stated[k]) !== asked[k]);
      if ((stated.stop ?? []).length) other.push("stop");
      if (result.ok && other.length) {  // a verified record of parameters nobody asked for
        result.ok = false;
        result.error = `the record states ${other.join(", ")} other than this page asked`;
      }
      const answer = `{"bundle": ${bundle}, "generation": ${record}}`;
      turn.append(
        h("p", {}, h("strong", {}, result.ok ? "Receipt verified; sampler replayed (in this page)"
          : "Verification failed")),
        h("p", { class: "muted" }, "What this page checks, against the key this node states: its signed checkpoint "
          + "(1), the receipt's inclusion (2), the digests of the generation record's prompt, "
          + "parameters and tokens (4, 5), the committed candidates (G1), the sampler replayed on them "
          + "(G2), the token count (G3)"
          + (known ? ", that the turn ended at the end-of-turn token and not before (G3: its ID read "
            + "from the manifest's tokenizer, whose CID was checked here)" : "")
          + ", that the receipt names this page's manifest and model (G4) and that the record's "
          + "sampling parameters and seed are the ones this page sent. Not checked here: the "
          + "text (the node decoded it; the page does not run the tokenizer), the prompt's tokens "
          + "(the node applied the chat template), and the logits themselves (re-execution): use ",
          code("verinfer verify-generation --tokenizer"), " on the downloaded answer."),
        verdictView(result),
        h("details", {}, h("summary", {}, "the bundle and generation record"), h("pre", { class: "bundle" }, answer)),
        h("a", { download: "answer.json", href: URL.createObjectURL(new Blob([answer], { type: "application/json" })) },
          "Download answer.json"));
    } catch (exc) {
      messages.pop();
      turn.append(h("p", { class: "error" }, `error: ${exc.message}`));
    } finally {
      send.disabled = false;
      question.focus();
    }
  }
  return h("div", {}, log, form);
}

// the token ID that ends a turn (the manifest's eos special token), from the tokenizer blob the
// manifest names, its bytes checked against that CID: as tokenizers' token_to_id finds it
async function endOfTurn(text) {
  const eos = text.special_tokens?.eos;
  if (typeof eos !== "string") return null;
  const response = await fetch(`/v1/blobs/${encodeURIComponent(text.tokenizer)}`);
  if (!response.ok) return null;
  const bytes = new Uint8Array(await response.arrayBuffer());
  if (await v.cidCompute(bytes) !== text.tokenizer) return null;
  const tokenizer = JSON.parse(new TextDecoder().decode(bytes));
  const added = (tokenizer.added_tokens ?? []).find((t) => t.content === eos);
  const id = added ? added.id : tokenizer.model?.vocab?.[eos];
  return Number.isInteger(id) ? [id] : null;
}

// an embedding model: texts (one per line) to this node's embeddings route; the answer's
// bundle is verified here against the token tensors and the vectors shown
function embedBox(ref, body) {
  const area = h("textarea", { name: "texts", rows: 3, required: true },
    "The cat sat on the mat.\nA kitten rested on the rug.");
  const out = h("div", { class: "answer", "aria-live": "polite" });
  const form = h("form", { class: "tryit", onsubmit: (e) => { e.preventDefault(); run(); } },
    h("label", { class: "wide" }, "Texts to embed, one per line", area), h("button", { type: "submit" }, "Embed"));
  const cosine = (a, b) => a.reduce((s, x, i) => s + x * b[i], 0)
    / Math.sqrt(a.reduce((s, x) => s + x * x, 0) * b.reduce((s, x) => s + x * x, 0));

  async function run() {
    out.replaceChildren(h("p", {}, "Running…"));
    try {
      const texts = area.value.split("\n").map((t) => t.trim()).filter(Boolean);
      const answer = await api("/v1/embeddings", { method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: ref, input: texts }) }, true);
      const vectors = answer.data.map((d) => d.embedding);
      const inputs = {};
      for (const spec of body.inputs) {
        const data = answer.verinfer.inputs[spec.name];
        inputs[spec.name] = { dtype: spec.dtype, shape: [data.length, data[0]?.length ?? 0], data };
      }
      const outputs = { [body.outputs[0].name]: { dtype: body.outputs[0].dtype,
        shape: [vectors.length, vectors[0].length], data: vectors } };
      const text = v.dumps(answer.verinfer.bundle);
      const result = await v.verify(text, { trusted: [(await node()).vkey], inputs, outputs });
      const plain = vectors.map((x) => x.map(Number));
      out.replaceChildren(
        h("h3", {}, `${vectors.length} vector(s) of ${vectors[0].length}`),
        h("ul", {}, plain.map((x, i) => h("li", { class: "mono" }, `${i + 1}: [${x.slice(0, 4).map((y) => y.toFixed(4)).join(", ")}, …]`))),
        plain.length > 1 ? h("p", { class: "similarity" }, `cosine similarity of 1 and 2: ${cosine(plain[0], plain[1]).toFixed(4)}`) : null,
        h("h3", {}, "Verified in this page"),
        h("p", { class: "muted" }, "What this page checks, against the key this node states: the "
          + "signed checkpoint (1), the receipt's inclusion (2), the token tensors the node states (4) and "
          + "the vectors shown (5). Not checked here: that the tokens are your texts' (the page has no tokenizer)."),
        verdictView(result),
        h("details", {}, h("summary", {}, "the bundle"), h("pre", { class: "bundle" }, text)));
    } catch (exc) { out.replaceChildren(h("p", { class: "error" }, `error: ${exc.message}`)); }
  }
  return h("div", {}, form, out);
}

// an input an image classifier reads: float32 [N, 3, H, W] with fixed H and W
const isImage = (spec, shape) => spec.dtype === "float32" && shape.length === 4 && shape[1] === 3
  && typeof spec.shape?.[2] === "number" && typeof spec.shape?.[3] === "number";
const MEAN = [0.485, 0.456, 0.406], STD = [0.229, 0.224, 0.225]; // ImageNet's, per channel

// a picture as float32 [1, 3, H, W]: resized, scaled to [0, 1], normalized by ImageNet's mean
// and standard deviation (what ImageNet classifiers such as squeezenet expect)
async function pixels(file, height, width) {
  const canvas = h("canvas", { width, height });
  const context = canvas.getContext("2d");
  context.drawImage(await createImageBitmap(file), 0, 0, width, height);
  const rgba = context.getImageData(0, 0, width, height).data;
  const out = new Float32Array(3 * height * width);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < height * width; i++) {
      out[c * height * width + i] = (rgba[4 * i + c] / 255 - MEAN[c]) / STD[c];
    }
  }
  return v.b64encode(new Uint8Array(out.buffer));
}

// one output in a line: its shape and, for a vector of scores, the largest
function top(name, tensor) {
  let values = [];
  try { values = Array.from(v.tensorValues(v.decodeTensor(name, tensor))); } catch { /* not numbers */ }
  let best = 0;
  values.forEach((x, i) => { if (x > values[best]) best = i; });
  return h("li", {}, `${name}: ${tensor.dtype}[${tensor.shape.join(", ")}]`,
    values.length > 1 ? ` — largest at index ${best} (${values[best]})` : values.length ? ` = ${values[0]}` : "");
}

// a form from the input signature: numbers for small tabular inputs, a picture for an image
// classifier, JSON nested lists otherwise
function tryIt(ref, body) {
  const fields = [];
  const form = h("form", { class: "tryit", onsubmit: (e) => { e.preventDefault(); run(); } });
  for (const spec of body.inputs) {
    const shape = (spec.shape ?? [1]).map((d) => (typeof d === "number" ? d : 1));
    const count = shape.reduce((a, b) => a * b, 1);
    const kind = spec.dtype === "bool" ? "bool" : spec.dtype.startsWith("float") ? "float" : "int";
    if (isImage(spec, shape)) {
      shape[0] = 1;
      const preview = h("img", { alt: "", class: "preview" });
      const file = h("input", { type: "file", accept: "image/*", required: true, name: spec.name,
        onchange: () => { if (file.files[0]) preview.src = URL.createObjectURL(file.files[0]); } });
      fields.push({ spec, shape, tensor: async () => ({ dtype: spec.dtype, shape,
        base64: await pixels(file.files[0], shape[2], shape[3]) }) });
      form.append(h("label", { class: "wide" },
        `${describe(spec)}: a picture (resized to ${shape[3]}×${shape[2]}, normalized as for ImageNet)`,
        file, preview));
    } else if (count <= 32) {
      const inputs = Array.from({ length: count }, (_, i) => h("input", {
        type: "number", step: kind === "float" ? "any" : "1", value: "1", required: true,
        "aria-label": `${spec.name}[${i}]`, name: `${spec.name}.${i}`,
      }));
      fields.push({ spec, shape, tensor: async () => nested(spec, shape, inputs.map((x) => Number(x.value))) });
      form.append(h("fieldset", { class: "row" }, h("legend", {}, describe(spec)), inputs));
    } else {
      const area = h("textarea", { name: spec.name, "aria-label": `${spec.name} as JSON nested lists` },
        JSON.stringify(new Array(count).fill(0)));
      fields.push({ spec, shape, tensor: async () => nested(spec, shape, JSON.parse(area.value).flat(Infinity)) });
      form.append(h("label", { class: "wide" }, `${describe(spec)}: numbers, as JSON`, area));
    }
  }
  const out = h("div", { class: "answer", "aria-live": "polite" });
  form.append(h("button", { type: "submit" }, "Run"));

  async function run() {
    out.replaceChildren(h("p", {}, "Running…"));
    try {
      const inputs = {};
      for (const { spec, tensor } of fields) inputs[spec.name] = await tensor();
      const answer = await api("/v1/infer", { method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: ref, inputs }) }, true);
      const text = v.dumps(answer.bundle);
      const result = await v.verify(text, { trusted: [(await node()).vkey], inputs, outputs: answer.outputs });
      out.replaceChildren(
        h("h3", {}, "Outputs"), h("ul", {}, Object.entries(answer.outputs).map(([name, t]) => top(name, t))),
        h("details", {}, h("summary", {}, "all outputs"),
          h("pre", { class: "outputs" }, v.dumps(answer.outputs))),
        h("h3", {}, "Verified in this page"),
        h("p", { class: "muted" }, "against the key this node states; to trust your own keys, use Verify."),
        verdictView(result),
        h("details", {}, h("summary", {}, "the bundle"), h("pre", { class: "bundle" }, text)),
        h("a", { download: "bundle.json", href: URL.createObjectURL(new Blob([text], { type: "application/json" })) },
          "Download bundle.json"));
    } catch (exc) { out.replaceChildren(h("p", { class: "error" }, `error: ${exc.message}`)); }
  }
  return h("div", {}, form, out);
}

// ---------------------------------------------------------------------------------------------
// Log

function chart(sizes) {
  const W = 600, H = 200, pad = 36;
  const max = Math.max(1, ...sizes);
  const x = (i) => pad + (sizes.length > 1 ? (i * (W - pad - 8)) / (sizes.length - 1) : 0);
  const y = (s) => H - pad + 8 - (s * (H - pad)) / max;
  return h("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `log size at each of the last ${sizes.length} checkpoints, up to ${max}` },
  h("line", { class: "axis", x1: pad, y1: H - pad + 8, x2: W - 4, y2: H - pad + 8 }),
  h("line", { class: "axis", x1: pad, y1: 4, x2: pad, y2: H - pad + 8 }),
  h("text", { x: 2, y: 14 }, String(max)), h("text", { x: 2, y: H - pad + 8 }, "0"),
  h("text", { x: pad, y: H - 8 }, "checkpoints, oldest to newest"),
  h("polyline", { class: "line", points: sizes.map((s, i) => `${x(i)},${y(s)}`).join(" ") }));
}

async function logPage(query) {
  const [net, me] = await Promise.all([api("/v1/explorer/network"), node()]);
  const entry = h("div", { "aria-live": "polite" }), consistency = h("div", { "aria-live": "polite" });
  const which = h("input", { name: "entry", value: query.get("entry") ?? String(Math.max(0, net.node.size - 1)),
    "aria-label": "entry index or leaf hash (base64)" });
  const old = h("input", { type: "number", min: 0, name: "old", value: Math.max(0, net.node.size - 1),
    "aria-label": "older size" });
  const size = h("input", { type: "number", min: 0, name: "size", value: net.node.size, "aria-label": "newer size" });
  const showEntry = () => showReceipt(which.value.trim(), me.vkey, entry);
  if (net.node.size) showEntry();
  return [
    h("h1", {}, "Log"),
    card(h("p", {}, `${net.node.origin}: ${net.node.size} entries, ${net.checkpoints} checkpoints`),
      chart(net.checkpoint_sizes)),
    h("h2", {}, "An entry and its inclusion proof"),
    h("form", { onsubmit: (e) => { e.preventDefault(); showEntry(); } },
      h("label", {}, "index or leaf hash", which), h("button", { type: "submit" }, "Show")),
    entry,
    h("h2", {}, "Consistency between two sizes"),
    h("form", { onsubmit: (e) => { e.preventDefault(); checkConsistency(old.value.trim(), size.value.trim(), me.vkey, consistency); } },
      h("label", {}, "older size", old), h("label", {}, "newer size", size),
      h("button", { type: "submit" }, "Check")),
    consistency,
  ];
}

async function signedCheckpoint(size, vkey) {
  const signed = await api(`/v1/log/checkpoint/${size}`);
  const { text } = await v.verifyNote(signed, [await v.parseKey(vkey)]);
  return v.parseCheckpoint(text);
}

async function showReceipt(which, vkey, out) {
  out.replaceChildren(h("p", {}, "Loading…"));
  try {
    const param = /^[0-9]+$/.test(which) ? `index=${which}` : `hash=${encodeURIComponent(which)}`;
    const found = await api(`/v1/log/proof/inclusion?${param}`, undefined, true);
    const checkpoint = await signedCheckpoint(found.size, vkey);
    const data = v.b64decode(found.entry);
    const receipt = v.loads(new TextDecoder().decode(data), "last");
    const proof = found.proof.map(v.b64decode);
    let verdict;
    try {
      await v.verifyInclusion(await v.leafHash(data), found.index, checkpoint.size, proof, checkpoint.root);
      verdict = badge(true, `included in the signed checkpoint of size ${checkpoint.size}`);
    } catch (exc) { verdict = badge(false, exc.message); }
    out.replaceChildren(card(
      h("p", {}, `Entry ${found.index} `, verdict),
      facts(Object.entries(receipt).map(([k, x]) => [k, code(typeof x === "string" ? x : v.dumps(x))])),
      h("h3", {}, "The path up the tree"),
      await pathView(data, found.index, found.size, proof, checkpoint.root)));
  } catch (exc) { out.replaceChildren(h("p", { class: "error" }, `error: ${exc.message}`)); }
}

// each step of RFC 9162 inclusion verification: which side the sibling is on, and the hash
async function pathView(data, index, size, proof, root) {
  const rows = [];
  let acc = await v.leafHash(data), fn = BigInt(index), sn = BigInt(size) - 1n;
  rows.push(h("li", {}, "leaf hash ", code(v.hex(acc))));
  for (const [level, sibling] of proof.entries()) {
    const left = Boolean(fn & 1n) || fn === sn;
    acc = left ? await v.nodeHash(sibling, acc) : await v.nodeHash(acc, sibling);
    if (left) while (!(fn & 1n) && fn) { fn >>= 1n; sn >>= 1n; }
    fn >>= 1n; sn >>= 1n;
    rows.push(h("li", {}, `proof hash ${level} on the ${left ? "left" : "right"}: `, code(v.hex(sibling)),
      h("br"), "→ ", code(v.hex(acc))));
  }
  rows.push(h("li", {}, "signed root ", code(v.hex(root))));
  return h("ol", { class: "path" }, rows);
}

async function checkConsistency(old, size, vkey, out) {
  out.replaceChildren(h("p", {}, "Checking…"));
  try {
    if (!/^[0-9]+$/.test(old) || !/^[0-9]+$/.test(size)) throw new Error("sizes are whole numbers");
    const [a, b, found] = await Promise.all([signedCheckpoint(old, vkey), signedCheckpoint(size, vkey),
      api(`/v1/log/proof/consistency?old=${old}&size=${size}`)]);
    await v.verifyConsistency(a.size, b.size, a.root, b.root, found.proof.map(v.b64decode));
    out.replaceChildren(card(badge(true, "consistent"),
      h("p", {}, `The signed tree of size ${old} is a prefix of the signed tree of size ${size} `
        + `(${found.proof.length}-hash proof, checked in this page).`)));
  } catch (exc) { out.replaceChildren(card(badge(false, "not consistent"), h("p", { class: "error" }, exc.message))); }
}

// ---------------------------------------------------------------------------------------------
// Verify: everything stays in this page

function verifyPage() {
  const area = (name, label, rows = 6) => {
    const t = h("textarea", { name, rows, spellcheck: "false" });
    const file = h("input", { type: "file", name: `${name}-file`, "aria-label": `${label}: from a file`,
      onchange: async () => {
        const chosen = file.files[0];
        if (!chosen) return;
        try {  // an .npz (as verinfer infer writes them) is shown in the JSON form
          t.value = chosen.name.endsWith(".npz")
            ? v.tensorsJson(await v.decodeNpz(new Uint8Array(await chosen.arrayBuffer())))
            : await chosen.text();
        } catch (exc) { t.value = ""; out.replaceChildren(h("p", { class: "error" }, `error: ${exc.message}`)); }
      } });
    return [t, h("label", { class: "wide" }, label, t, file)];
  };
  const [bundle, bundleField] = area("bundle", "bundle.json (paste, drop or choose a file)", 8);
  const [trust, trustField] = area("trust", "trusted node keys, one per line, or a trust root (verinfer.trust/v1)", 3);
  const [inputs, inputsField] = area("inputs", "inputs (optional: JSON tensors or an .npz)", 3);
  const [outputs, outputsField] = area("outputs", "outputs (optional: JSON tensors or an .npz)", 3);
  const [witnesses, witnessesField] = area("witnesses", "trusted witness keys (optional), each optionally followed by its operator (a trust root's labels win), or a network.json", 3);
  const quorum = h("input", { type: "number", min: 0, value: 0, name: "quorum" });
  const out = h("div", { id: "result", "aria-live": "polite" });
  bundle.addEventListener("dragover", (e) => e.preventDefault());
  bundle.addEventListener("drop", async (e) => {
    e.preventDefault();
    if (e.dataTransfer.files[0]) bundle.value = await e.dataTransfer.files[0].text();
  });
  async function check() {
    try {
      // as `verinfer verify --trust T --witnesses W --quorum Q --inputs I --outputs O` reads them:
      // a trust root (verinfer.trust/v1; its operator labels win) or node keys; tensors as JSON
      const options = await v.trustOptions(trust.value, witnesses.value, +quorum.value);
      if (inputs.value.trim()) options.inputs = inputs.value;
      if (outputs.value.trim()) options.outputs = outputs.value;
      out.replaceChildren(verdictView(await v.verify(bundle.value, options)));
    } catch (exc) { out.replaceChildren(h("p", { class: "error" }, `error: ${exc.message}`)); }
  }
  return [
    h("h1", {}, "Verify a bundle"),
    h("p", {}, "The checks run in this page (WebCrypto Ed25519 and SHA-256), the same numbered steps "
      + "as verinfer verify. Nothing is sent to the server."),
    h("form", { onsubmit: (e) => { e.preventDefault(); check(); } },
      bundleField, trustField, inputsField, outputsField, witnessesField,
      h("label", {}, "witness quorum", quorum), h("button", { type: "submit", id: "verify" }, "Verify")),
    out,
  ];
}

// ---------------------------------------------------------------------------------------------

async function route() {
  const [path, search] = (location.hash.slice(1) || "/network").split("?");
  const query = new URLSearchParams(search ?? "");
  const [, page, ...rest] = path.split("/");
  for (const a of document.querySelectorAll("nav a")) {
    const current = a.dataset.page === (page === "model" ? "models" : page);
    if (current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  try {
    const pages = { network: networkPage, models: modelsPage, log: logPage, verify: verifyPage,
      model: () => modelPage(decodeURIComponent(rest.join("/"))) };
    const content = await (pages[page] ?? networkPage)(query);
    view.replaceChildren(...[content].flat(Infinity));
    document.title = `${view.querySelector("h1")?.textContent ?? "verinfer"} · verinfer explorer`;
    view.dataset.page = page;
  } catch (exc) {
    view.replaceChildren(h("h1", {}, "Something went wrong"), h("p", { class: "error" }, exc.message));
  }
}

addEventListener("hashchange", async () => {
  await route();
  scrollTo(0, 0);
  view.focus({ preventScroll: true }); // keyboard and screen reader users land on the new page
});
route();
