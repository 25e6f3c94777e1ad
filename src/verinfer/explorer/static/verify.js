// The offline verifier, a second implementation of verinfer.verify (Python) for the browser:
// the same numbered steps, the same messages. Pure: no network, only WebCrypto (SHA-256,
// Ed25519). The tests run it and the Python verifier on the same bundles and compare.
//
// verify(bundleText, options) -> {ok, steps: [line, ...], error: message | null}
// options: {trusted: [vkey], inputs, outputs: tensors in the JSON form, model: Uint8Array,
//           witnesses: [vkey], quorum: int, operators: {vkey: operator}}

export class VerificationError extends Error {}

const enc = new TextEncoder();
const fail = (message) => { throw new VerificationError(message); };

// ---------------------------------------------------------------------------------------------
// Python's repr(), for messages that quote a value as the Python verifier does

export function repr(value) {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "bigint") return String(value); // a JSON integer: Python's int
  if (typeof value === "number") return floatRepr(value); // a JSON number with . or e: a float
  if (typeof value === "string") {
    const quote = value.includes("'") && !value.includes('"') ? '"' : "'";
    let out = quote;
    for (const ch of value) {
      const code = ch.codePointAt(0);
      if (ch === "\\" || ch === quote) out += "\\" + ch;
      else if (ch === "\n") out += "\\n";
      else if (ch === "\r") out += "\\r";
      else if (ch === "\t") out += "\\t";
      else if (code < 0x20 || code === 0x7f) out += "\\x" + code.toString(16).padStart(2, "0");
      else if (!isPrintable(ch)) {
        out += code <= 0xff ? "\\x" + code.toString(16).padStart(2, "0")
          : code <= 0xffff ? "\\u" + code.toString(16).padStart(4, "0")
            : "\\U" + code.toString(16).padStart(8, "0");
      } else out += ch;
    }
    return out + quote;
  }
  if (Array.isArray(value)) return "[" + value.map(repr).join(", ") + "]";
  return "{" + Object.entries(value).map(([k, v]) => `${repr(k)}: ${repr(v)}`).join(", ") + "}";
}

// float.__repr__: the shortest digits that round-trip, positional unless the exponent is
// below -4 or 16 and above ("1e+16", "1.5e-05", "100.0")
function floatRepr(x) {
  if (Number.isNaN(x)) return "nan";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  const sign = x < 0 || Object.is(x, -0) ? "-" : "";
  const [mantissa, exponent] = Math.abs(x).toExponential().split("e");
  const digits = mantissa.replace(".", ""), e = Number(exponent);
  if (e < -4 || e >= 16) {
    const rest = digits.length > 1 ? "." + digits.slice(1) : "";
    return `${sign}${digits[0]}${rest}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
  }
  if (e < 0) return `${sign}0.${"0".repeat(-e - 1)}${digits}`;
  const whole = digits.slice(0, e + 1).padEnd(e + 1, "0"), fraction = digits.slice(e + 1);
  return `${sign}${whole}.${fraction || "0"}`;
}

// Python's name for a parsed JSON value's type
function typeName(value) {
  if (value === null) return "NoneType";
  if (Array.isArray(value)) return "list";
  if (typeof value === "string") return "str";
  if (typeof value === "boolean") return "bool";
  if (typeof value === "bigint") return "int";
  if (typeof value === "number") return "float";
  return "dict";
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isPrintable = (s) => /^(?:[^\p{C}\p{Z}]| )*$/u.test(s); // str.isprintable()
const encodable = (s) => !/\p{Cs}/u.test(s); // no lone surrogate: valid UTF-8
const isInt = (v) => typeof v === "bigint"; // parsed JSON: integers are BigInt, floats numbers

// ---------------------------------------------------------------------------------------------
// bytes: hex, strict base64, base32, SHA-256

export const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export function b64encode(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

// base64.b64decode(validate=True): null if not strict base64
export function b64decode(text) {
  if (typeof text !== "string" || !B64.test(text)) return null;
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

export async function sha256(data) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data));
}

const B32 = "abcdefghijklmnopqrstuvwxyz234567";

function b32encode(bytes) {
  let bits = 0, value = 0, out = "";
  for (const byte of bytes) {
    value = (value << 8) | byte; bits += 8;
    while (bits >= 5) { out += B32[(value >>> (bits - 5)) & 31]; bits -= 5; }
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31];
  return out;
}

function b32decode(text) {
  let bits = 0, value = 0;
  const out = [];
  for (const ch of text) {
    const v = B32.indexOf(ch);
    if (v < 0) return null;
    value = ((value << 5) | v) & 0xffff; bits += 5;
    if (bits >= 8) { out.push((value >>> (bits - 8)) & 255); bits -= 8; }
  }
  return new Uint8Array(out);
}

// ---------------------------------------------------------------------------------------------
// CIDs (verinfer.cid): "b" + base32(01 55 12 20 || sha256)

const CID_PREFIX = [0x01, 0x55, 0x12, 0x20];
const cidOf = (digest) => "b" + b32encode(concat(Uint8Array.from(CID_PREFIX), digest));

export function cidDigest(cid) {
  if (typeof cid !== "string" || [...cid].length !== 59 || !cid.startsWith("b")) {
    fail(`malformed CID ${repr(cid)}: expected 'b' and 58 base32 characters`);
  }
  const body = cid.slice(1);
  if (body !== body.toLowerCase()) fail(`malformed CID ${repr(cid)}: base32 must be lower-case`);
  const raw = b32decode(body);
  if (raw === null) fail(`malformed CID ${repr(cid)}: not base32`);
  if (!equal(raw.subarray(0, 4), CID_PREFIX)) {
    fail(`unsupported CID ${repr(cid)}: only CIDv1 raw sha2-256 is accepted`);
  }
  if (cidOf(raw.subarray(4)) !== cid) fail(`malformed CID ${repr(cid)}: non-canonical base32`);
  return raw.subarray(4);
}

export async function cidCompute(data) { return cidOf(await sha256(data)); }

// ---------------------------------------------------------------------------------------------
// Tensor digests (verinfer.tensors, PROTOCOL.md §9) of tensors in the JSON form

const DTYPES = new Map(Object.entries({
  float16: [2, typeof Float16Array === "undefined" ? null : Float16Array],
  float32: [4, Float32Array], float64: [8, Float64Array],
  int8: [1, Int8Array], int16: [2, Int16Array], int32: [4, Int32Array], int64: [8, BigInt64Array],
  uint8: [1, Uint8Array], uint16: [2, Uint16Array], uint32: [4, Uint32Array],
  uint64: [8, BigUint64Array], bool: [1, Uint8Array],
}));
const MAX_RANK = 32, MAX_EXTENT = (1n << 63n) - 1n;

// a JS value (not parsed by loads, e.g. built by the page) as loads would have read its
// JSON.stringify: integral numbers are integers
export function pyValue(value) {
  if (typeof value === "number") return Number.isInteger(value) && !Object.is(value, -0) ? BigInt(value) : value;
  if (Array.isArray(value)) return value.map(pyValue);
  if (value === null || typeof value !== "object") return value;
  const out = Object.create(null);
  for (const [k, v] of Object.entries(value)) out[k] = pyValue(v);
  return out;
}

const product = (dims) => dims.reduce((a, b) => a * b, 1n);

// the shape numpy finds in nested lists (np.array(data, dtype=object)): the longest prefix of
// dims every branch shares
function shapeOf(value) {
  if (!Array.isArray(value)) return [];
  let common = null;
  for (const item of value) {
    const found = shapeOf(item);
    if (common === null) common = found;
    else {
      let k = 0;
      while (k < common.length && k < found.length && common[k] === found[k]) k++;
      common = common.slice(0, k);
    }
  }
  return [BigInt(value.length), ...(common ?? [])];
}

function leaves(value, depth, out = []) {
  if (depth === 0) out.push(value);
  else for (const item of value) leaves(item, depth - 1, out);
  return out;
}

// an integer as numpy's astype(dtype) takes it: the value, or what numpy says
function fitInteger(v, dtype) {
  const bits = BigInt(DTYPES.get(dtype)[0] * 8), unsigned = dtype.startsWith("u");
  const low = unsigned ? 0n : -(1n << (bits - 1n)), high = (unsigned ? 1n << bits : 1n << (bits - 1n)) - 1n;
  if (v < -(1n << 63n) || v > (dtype === "int64" ? high : (1n << 64n) - 1n)) {
    return "Python int too large to convert to C long";
  }
  return v < low || v > high ? `Python integer ${v} out of bounds for ${dtype}` : null;
}

const roundTo = { float16: (x) => Math.f16round(x), float32: Math.fround, float64: (x) => x };

// tensors.decode_json for one tensor of the JSON form (parsed by loads, or pyValue'd):
// {dtype, shape: [BigInt], bytes: little-endian elements}
export function decodeTensor(name, item) {
  const plain = Array.isArray(item) || typeof item === "bigint" || typeof item === "number";
  if (!isObject(item)) {
    fail(`tensor ${repr(name)} must be an object with dtype, shape and data`
      + (plain ? " (a plain list needs the model's signature)" : ""));
  }
  const keys = Object.keys(item);
  if (keys.some((k) => !["dtype", "shape", "data", "base64"].includes(k)) || ("data" in item) === ("base64" in item)) {
    fail(`tensor ${repr(name)} needs dtype, shape and exactly one of data or base64 (got ${repr(sorted(keys))})`);
  }
  const dtype = item.dtype;
  if (typeof dtype !== "string" || !DTYPES.has(dtype)) fail(`tensor ${repr(name)}: unsupported dtype ${repr(dtype)}`);
  const shape = item.shape;
  if (!Array.isArray(shape) || shape.length > MAX_RANK) {
    fail(`tensor ${repr(name)}: shape must be a list of at most ${MAX_RANK} dims`);
  }
  if (!shape.every((d) => typeof d === "bigint" && d >= 0n)) {
    fail(`tensor ${repr(name)}: shape ${repr(shape)} must hold integers >= 0`);
  }
  const [width, Kind] = DTYPES.get(dtype);
  checkExtent(name, shape, width);
  const count = product(shape);
  if ("base64" in item) {
    const raw = b64decode(item.base64);
    if (raw === null) fail(`tensor ${repr(name)}: base64 is malformed`);
    if (BigInt(raw.length) !== count * BigInt(width)) {
      fail(`tensor ${repr(name)}: ${raw.length} bytes of data for shape ${repr(shape)} of ${dtype} `
        + `(${count * BigInt(width)} bytes expected)`);
    }
    if (dtype === "bool" && raw.some((b) => b > 1)) fail(`tensor ${repr(name)}: bool bytes must be 0 or 1`);
    return { dtype, shape, bytes: raw };
  }
  const data = item.data;
  if (count === 0n) { // nested lists cannot spell a zero dim before the last one
    if (!Array.isArray(data) || product(shapeOf(data)) !== 0n) fail(`tensor ${repr(name)}: shape ${repr(shape)} holds no data`);
    return { dtype, shape, bytes: new Uint8Array(0) };
  }
  const found = shapeOf(data);
  if (found.length !== shape.length || found.some((d, i) => d !== shape[i])) {
    fail(`tensor ${repr(name)}: data has shape ${repr(found)}, declared ${repr(shape)}`);
  }
  const values = leaves(data, shape.length);
  const float = dtype.startsWith("float");
  const fits = dtype === "bool" ? (v) => typeof v === "boolean"
    : float ? (v) => typeof v === "bigint" || typeof v === "number" : (v) => typeof v === "bigint";
  if (!values.every(fits)) {
    const wanted = dtype === "bool" ? "true or false" : float ? "numbers" : "integers";
    fail(`tensor ${repr(name)}: data does not fit dtype ${dtype}: need ${wanted}`);
  }
  if (Kind === null) fail("this browser has no Float16Array: give float16 tensors as base64");
  const array = new Kind(values.length);
  if (float) {
    const given = values.map((v) => (typeof v === "bigint" ? Number(v) : v));
    if (values.some((v, i) => typeof v === "bigint" && !Number.isFinite(given[i]))) {
      fail(`tensor ${repr(name)}: data does not fit dtype ${dtype}: int too large to convert to float`);
    }
    given.forEach((x, i) => { array[i] = roundTo[dtype](x); });
    if (given.some((x, i) => Number.isFinite(x) && !Number.isFinite(array[i]))) {
      // a finite number too large for the dtype does not silently become infinity
      fail(`tensor ${repr(name)}: data does not fit dtype ${dtype}: out of range`);
    }
  } else {
    values.forEach((v, i) => {
      if (dtype === "bool") { array[i] = v ? 1 : 0; return; }
      const why = fitInteger(v, dtype);
      if (why) fail(`tensor ${repr(name)}: data does not fit dtype ${dtype}: ${why}`);
      array[i] = Kind === BigInt64Array || Kind === BigUint64Array ? v : Number(v);
    });
  }
  return { dtype, shape, bytes: new Uint8Array(array.buffer) }; // little-endian, as browsers run
}

function checkExtent(name, shape, width) {
  let extent = BigInt(width);
  for (const dim of shape) {
    extent *= dim > 1n ? dim : 1n;
    if (extent > MAX_EXTENT) {
      fail(`tensor ${repr(name)}: shape ${repr(shape)} is too large to represent (its dims, zeros `
        + `left out, times the ${width}-byte element exceed 2**63 - 1 bytes)`);
    }
  }
}

// tensors.decode_json: named tensors of the JSON form (text, as the CLI reads a .json file, or
// a value); refused exactly where Python refuses
export function decodeTensors(value) {
  if (typeof value === "string") {
    try { value = loads(pythonText(value), "last"); } catch (exc) {
      if (exc instanceof JsonError || exc instanceof TypeError) fail(`tensors are not JSON: ${exc.message}`);
      throw exc;
    }
  } else if (!(value instanceof Object) || Object.getPrototypeOf(value) !== null) value = pyValue(value);
  if (!isObject(value) || !Object.keys(value).length) fail("tensors must be a non-empty JSON object of name -> tensor");
  const out = Object.create(null);
  for (const [name, item] of Object.entries(value)) {
    if (!encodable(name)) fail(`tensor name ${repr(name)} is not valid Unicode`);
    out[name] = decodeTensor(name, item);
  }
  return out;
}

// the elements of a decoded tensor, as a typed array
export function tensorValues(tensor) {
  const Kind = DTYPES.get(tensor.dtype)[1];
  if (Kind === null) fail("this browser has no Float16Array");
  const { bytes } = tensor;
  return new Kind(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
}

export async function tensorDigest(tensor) {
  const rank = tensor.shape.length;
  const head = new DataView(new ArrayBuffer(4 + 8 * rank));
  head.setUint32(0, rank);
  tensor.shape.forEach((d, i) => head.setBigUint64(4 + 8 * i, BigInt(d)));
  return sha256(concat(enc.encode("verinfer/tensor/v1\0" + tensor.dtype + "\0"),
    new Uint8Array(head.buffer), tensor.bytes));
}

const byUtf8 = (a, b) => {
  const x = enc.encode(a), y = enc.encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
};

// the map digest of decoded tensors
export async function mapDigest(tensors) {
  const names = Object.keys(tensors).sort(byUtf8);
  const parts = [enc.encode("verinfer/tensors/v1\0"), u32(names.length)];
  for (const name of names) {
    const encoded = enc.encode(name);
    parts.push(u32(encoded.length), encoded, await tensorDigest(tensors[name]));
  }
  return "sha256:" + hex(await sha256(concat(...parts)));
}

// the JSON form of decoded tensors, as text (base64 of the bytes; shapes exact)
export function tensorsJson(tensors) {
  const items = Object.entries(tensors).map(([name, t]) => `${JSON.stringify(name)}: {"dtype": `
    + `"${t.dtype}", "shape": [${t.shape.join(", ")}], "base64": "${b64encode(t.bytes)}"}`);
  return `{${items.join(", ")}}`;
}

function u32(n) {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

// ---------------------------------------------------------------------------------------------
// .npz files (numpy's zip of .npy members, as `verinfer infer` writes them) to the JSON form

const NPY_DTYPES = { f2: "float16", f4: "float32", f8: "float64", i1: "int8", i2: "int16",
  i4: "int32", i8: "int64", u1: "uint8", u2: "uint16", u4: "uint32", u8: "uint64", b1: "bool" };
const MAX_NPZ_MEMBERS = 1024, MAX_NPZ_DIRECTORY = 1 << 20, MAX_NPY_HEADER = 10000;
// the header numpy writes, exactly: a dict of 'descr', 'fortran_order' and 'shape' (any order,
// each once), decimal dims; numpy's parser (a Python literal) reads more, such as a key given
// twice (the last one counts), which this refuses rather than risk reading it otherwise
const NPY_ENTRY = /^'(descr|fortran_order|shape)'[ \t\n]*:[ \t\n]*('[<>|=]?[a-z][0-9]+'|True|False|\((?:[ \t\n]*(?:0|[1-9][0-9]*)[ \t\n]*,)*(?:[ \t\n]*(?:0|[1-9][0-9]*))?[ \t\n]*\))[ \t\n]*(?:,[ \t\n]*|(?=\}))/;

function npyHeader(name, header) {
  const bad = () => fail(`tensor ${repr(name)}: unsupported .npy header ${repr(header)}`);
  let rest = header.replace(/[ \t\n]+$/, "");
  if (!rest.startsWith("{") || !rest.endsWith("}")) bad();
  rest = rest.slice(1).replace(/^[ \t\n]+/, "");
  const found = new Map();
  while (rest !== "}") {
    const entry = NPY_ENTRY.exec(rest);
    if (!entry || found.has(entry[1])) bad();
    found.set(entry[1], entry[2]);
    rest = rest.slice(entry[0].length);
  }
  const descr = /^'([<>|=]?)([a-z][0-9]+)'$/.exec(found.get("descr") ?? "");
  const order = found.get("fortran_order"), shape = found.get("shape") ?? "";
  if (found.size !== 3 || !descr || !NPY_DTYPES[descr[2]] || !/^(True|False)$/.test(order) || !shape.startsWith("(")) bad();
  const dims = shape.slice(1, -1).split(",").map((d) => d.trim());
  if (dims.at(-1) === "") dims.pop();
  if (dims.length === 1 && !/,[ \t\n]*\)$/.test(shape)) bad(); // (2) is a number, not a tuple
  if (order === "True") fail(`tensor ${repr(name)}: Fortran order: save it in C order`);
  return { dtype: NPY_DTYPES[descr[2]], big: descr[1] === ">", shape: dims.map(BigInt) };
}

function npy(name, bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = bytes.length >= 10 && bytes[0] === 0x93 && new TextDecoder().decode(bytes.subarray(1, 6)) === "NUMPY";
  if (!magic) fail(`tensor ${repr(name)}: not a .npy`);
  const long = !(bytes[6] === 1 && bytes[7] === 0); // numpy reads every other version as 2.0
  const size = long ? view.getUint32(8, true) : view.getUint16(8, true);
  const start = (long ? 12 : 10) + size;
  if (size > MAX_NPY_HEADER || start > bytes.length) fail(`tensor ${repr(name)}: malformed .npy header`);
  const header = new TextDecoder("latin1").decode(bytes.subarray(long ? 12 : 10, start));
  const { dtype, big, shape } = npyHeader(name, header);
  const width = DTYPES.get(dtype)[0];
  checkExtent(name, shape, width);
  const length = product(shape) * BigInt(width);
  if (BigInt(bytes.length - start) < length) fail(`tensor ${repr(name)}: truncated .npy`);
  const data = bytes.slice(start, start + Number(length));
  if (big) for (let i = 0; i < data.length; i += width) data.subarray(i, i + width).reverse();
  if (dtype === "bool" && data.some((b) => b > 1)) fail(`tensor ${repr(name)}: bool bytes must be 0 or 1`);
  return { dtype, shape, bytes: data };
}

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// the named tensors of an .npz, decoded. Read as Python's zipfile reads it (the members its
// central directory lists, walked by its size), each member's size and CRC-32 checked;
// anything zipfile would read otherwise (data before the archive, zip64 directories,
// encryption, names not in UTF-8) is refused
export async function decodeNpz(bytes) {
  const bad = (why) => fail(`malformed .npy/.npz data: ${why}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // the last end-of-directory signature in the last 64 KiB (a comment may follow it)
  const floor = Math.max(0, bytes.length - 22 - 0xffff);
  let end = bytes.length - 4;
  while (end >= floor && view.getUint32(end, true) !== 0x06054b50) end--;
  if (end < floor || end + 22 > bytes.length) bad("File is not a zip file");
  const count = view.getUint16(end + 10, true), dirSize = view.getUint32(end + 12, true);
  const dirStart = view.getUint32(end + 16, true);
  if (count > MAX_NPZ_MEMBERS) fail(`the .npz lists ${count} members, above the limit of ${MAX_NPZ_MEMBERS}`);
  if (dirSize > MAX_NPZ_DIRECTORY) fail(`the .npz's zip directory is ${dirSize} bytes, above the limit of ${MAX_NPZ_DIRECTORY}`);
  if (end >= 20 && view.getUint32(end - 20, true) === 0x07064b50) bad("zip64 directories are not read here");
  if (dirStart + dirSize !== end) bad("data before or after the zip directory");
  const members = [];
  for (let at = dirStart; at < dirStart + dirSize;) {
    if (at + 46 > end || view.getUint32(at, true) !== 0x02014b50) bad("Bad magic number for central directory");
    const flags = view.getUint16(at + 8, true), method = view.getUint16(at + 10, true);
    let compressed = view.getUint32(at + 20, true), size = view.getUint32(at + 24, true);
    let offset = view.getUint32(at + 42, true);
    const nameLength = view.getUint16(at + 28, true), extraLength = view.getUint16(at + 30, true);
    const nameBytes = bytes.subarray(at + 46, at + 46 + nameLength);
    if (flags & 0x61) bad("encrypted or patched members are not read");
    if (bytes[at + 6] > 63) bad(`zip file version ${bytes[at + 6] / 10}`);
    if (!(flags & 0x800) && nameBytes.some((b) => b > 0x7f)) bad("a member name is not UTF-8");
    let file;
    try { file = new TextDecoder("utf-8", { fatal: true }).decode(nameBytes); } catch { bad("a member name is not UTF-8"); }
    // zip64 (numpy writes it): the sizes and offset that overflowed are in extra field 0x0001
    let extra = at + 46 + nameLength;
    const extraEnd = extra + extraLength;
    while (extra + 4 <= extraEnd) {
      const id = view.getUint16(extra, true), length = view.getUint16(extra + 2, true);
      if (extra + 4 + length > extraEnd) bad("Corrupt extra field");
      if (id === 1) {
        let field = extra + 4;
        const next = () => {
          if (field + 8 > extra + 4 + length) bad("Corrupt extra field");
          const x = view.getBigUint64(field, true); field += 8;
          if (x > BigInt(bytes.length)) bad("a member is larger than the file");
          return Number(x);
        };
        if (size === 0xffffffff) size = next();
        if (compressed === 0xffffffff) compressed = next();
        if (offset === 0xffffffff) offset = next();
      }
      extra += 4 + length;
    }
    members.push({ file, nameBytes, method, compressed, size, offset, crc: view.getUint32(at + 16, true) });
    at = extraEnd + view.getUint16(at + 32, true);
  }
  if (members.length > MAX_NPZ_MEMBERS) fail(`the .npz holds ${members.length} members, above the limit of ${MAX_NPZ_MEMBERS}`);
  const out = Object.create(null);
  for (const { file, nameBytes, method, compressed, size, offset, crc } of members) {
    if (!file.endsWith(".npy")) fail(`member ${repr(file)} of the .npz is not a .npy`);
    if (offset + 30 > bytes.length || view.getUint32(offset, true) !== 0x04034b50) bad("Bad magic number for file header");
    const localName = bytes.subarray(offset + 30, offset + 30 + view.getUint16(offset + 26, true));
    if (!equal(localName, nameBytes)) bad(`File name in directory ${repr(file)} and header differ.`);
    const local = offset + 30 + localName.length + view.getUint16(offset + 28, true);
    let data = bytes.subarray(local, local + compressed);
    if (data.length !== compressed) bad(`member ${repr(file)} is truncated`);
    if (method === 8) {
      try { data = await inflate(data); } catch (exc) { bad(`member ${repr(file)}: ${exc.message}`); }
    } else if (method !== 0) bad(`member ${repr(file)} is compressed with method ${method}`);
    if (data.length !== size) bad(`member ${repr(file)} is ${data.length} bytes, its directory says ${size}`);
    if (crc32(data) !== crc) bad(`Bad CRC-32 for file ${repr(file)}`);
    const key = file.slice(0, -4);
    out[key] = npy(key, data);
  }
  if (!Object.keys(out).length) fail("the .npz holds no tensors");
  return out;
}

// ---------------------------------------------------------------------------------------------
// RFC 9162 Merkle trees (verinfer.merkle)

export const leafHash = (data) => sha256(concat(Uint8Array.of(0), data));
export const nodeHash = (l, r) => sha256(concat(Uint8Array.of(1), l, r));

export async function verifyInclusion(leaf, index, size, proof, root) {
  index = BigInt(index); size = BigInt(size); // exact above 2^53
  if (!(index >= 0n && index < size)) {
    fail(`leaf index ${repr(index)} is outside a tree of size ${repr(size)}`);
  }
  let fn = index, sn = size - 1n, acc = leaf;
  for (const element of proof) {
    if (sn === 0n) fail(`inclusion proof too long: ${proof.length} hashes`);
    if (fn & 1n || fn === sn) {
      acc = await nodeHash(element, acc);
      while (!(fn & 1n) && fn) { fn >>= 1n; sn >>= 1n; }
    } else acc = await nodeHash(acc, element);
    fn >>= 1n; sn >>= 1n;
  }
  if (sn !== 0n) fail(`inclusion proof too short: ${proof.length} hashes`);
  if (!equal(acc, root)) {
    fail(`inclusion proof of leaf ${index} in tree of size ${size} leads to root ${hex(acc)}, `
      + `expected ${hex(root)}`);
  }
}

// RFC 9162 §2.1.4.2: the tree of size1/root1 is a prefix of size2/root2
export async function verifyConsistency(size1, size2, root1, root2, proof) {
  size1 = BigInt(size1); size2 = BigInt(size2);
  if (!(size1 >= 0n && size1 <= size2)) {
    fail(`consistency needs 0 <= size1 <= size2, got ${size1}, ${size2}`);
  }
  if (size1 === 0n || size1 === size2) {
    if (proof.length) fail(`consistency proof must be empty, got ${proof.length} hashes`);
    if (size1 === size2 && !equal(root1, root2)) fail(`two different roots for one tree size ${size1}`);
    return;
  }
  if (!proof.length) fail("consistency proof is empty");
  const path = (size1 & (size1 - 1n)) === 0n ? [root1, ...proof] : [...proof];
  let fn = size1 - 1n, sn = size2 - 1n;
  while (fn & 1n) { fn >>= 1n; sn >>= 1n; }
  let fr = path[0], sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0n) fail("consistency proof too long");
    if (fn & 1n || fn === sn) {
      fr = await nodeHash(c, fr); sr = await nodeHash(c, sr);
      while (!(fn & 1n) && fn) { fn >>= 1n; sn >>= 1n; }
    } else sr = await nodeHash(sr, c);
    fn >>= 1n; sn >>= 1n;
  }
  if (sn !== 0n) fail("consistency proof too short");
  if (!equal(fr, root1) || !equal(sr, root2)) fail("consistency proof does not lead to the two roots");
}

// ---------------------------------------------------------------------------------------------
// C2SP signed notes, keys and checkpoints (verinfer.note)

const ED25519 = 0x01, COSIGNATURE = 0x04;
const SIG_LENGTH = { [ED25519]: 64, [COSIGNATURE]: 72 };
const SIG_PREFIX = "\u2014 ";
const MAX_NOTE_BYTES = 1 << 20, MAX_LINE_BYTES = 16 << 10, MAX_SIGNATURES = 100;
// str.isspace(): Python's whitespace (not JavaScript's \s: U+0085 is, U+FEFF is not)
const PY_SPACE = /[\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/u;
const validName = (n) => n.length > 0 && !n.includes("+") && ![...n].some((c) => PY_SPACE.test(c) || c < " ");
// str.split() and str.strip() with no argument, as the CLI reads key files
export const pySplit = (text) => text.split(new RegExp(PY_SPACE.source + "+", "u")).filter(Boolean);
export const pyStrip = (text) => text.replace(new RegExp(`^${PY_SPACE.source}+|${PY_SPACE.source}+$`, "gu"), "");
// str.splitlines()
export const pyLines = (text) => text.split(/\r\n|[\n\v\f\r\x1c-\x1e\x85\u2028\u2029]/u)
  .filter((line, i, all) => i < all.length - 1 || line);

function strictB64(text, what) {
  const raw = b64decode(text);
  if (raw === null) fail(`malformed ${what}: bad base64 ${repr(text)}`);
  if (b64encode(raw) !== text) fail(`malformed ${what}: non-canonical base64 ${repr(text)}`);
  return raw;
}

async function keyId(name, algorithm, pub) {
  const d = await sha256(concat(enc.encode(name + "\n"), Uint8Array.of(algorithm), pub));
  return new DataView(d.buffer).getUint32(0);
}

// VerifierKey.parse: {name, keyId, algorithm, public, vkey}
export async function parseKey(vkey) {
  const parts = typeof vkey === "string" ? splitN(vkey, "+", 2) : [];
  if (parts.length !== 3) fail(`malformed vkey ${repr(vkey)}: expected name+keyid+key`);
  const [name, idHex, keyB64] = parts;
  if (!validName(name)) fail(`malformed vkey ${repr(vkey)}: bad key name ${repr(name)}`);
  if (!/^[0-9a-f]{8}$/.test(idHex)) {
    fail(`malformed vkey ${repr(vkey)}: key ID must be 8 lower-case hex digits`);
  }
  let raw;
  try { raw = strictB64(keyB64, "vkey"); } catch { fail(`malformed vkey ${repr(vkey)}: bad base64 key`); }
  if (raw.length !== 33 || !SIG_LENGTH[raw[0]]) {
    fail(`malformed vkey ${repr(vkey)}: expected an Ed25519 key of type 0x01/0x04`);
  }
  const key = { name, keyId: parseInt(idHex, 16), algorithm: raw[0], public: raw.subarray(1) };
  if (await keyId(name, raw[0], key.public) !== key.keyId) {
    fail(`malformed vkey ${repr(vkey)}: key ID does not match the key`);
  }
  key.vkey = `${name}+${idHex}+${b64encode(raw)}`;
  return key;
}

// str.split(sep, n): at most n splits, the rest kept whole
function splitN(text, sep, n) {
  const parts = text.split(sep);
  return parts.length > n + 1 ? [...parts.slice(0, n), parts.slice(n).join(sep)] : parts;
}

const who = (s) => `${s.name}+${s.keyId.toString(16).padStart(8, "0")}`;

// note.parse: the text and its signature lines, structure only
export function parseNote(signed) {
  if (typeof signed !== "string") fail(`malformed note: expected text, got ${typeName(signed)}`);
  if (!encodable(signed)) fail("malformed note: not valid UTF-8");
  if (enc.encode(signed).length > MAX_NOTE_BYTES) fail(`malformed note: larger than ${MAX_NOTE_BYTES} bytes`);
  if (/[\x00-\x09\x0b-\x1f]/.test(signed)) fail("malformed note: contains a control character");
  if (!signed.endsWith("\n")) fail("malformed note: does not end with a newline");
  if (signed.split("\n").some((l) => enc.encode(l).length > MAX_LINE_BYTES)) {
    fail(`malformed note: a line is longer than ${MAX_LINE_BYTES} bytes`);
  }
  const split = signed.lastIndexOf("\n\n");
  if (split < 0) fail("malformed note: no blank line before the signatures");
  const text = signed.slice(0, split + 1), block = signed.slice(split + 2);
  const lines = block ? block.slice(0, -1).split("\n") : [];
  if (!lines.length) fail("malformed note: no signature lines");
  if (lines.length > MAX_SIGNATURES) fail(`malformed note: more than ${MAX_SIGNATURES} signatures`);
  const signatures = [], seen = new Set();
  for (const line of lines) {
    if (!line.startsWith(SIG_PREFIX)) {
      fail(`malformed note: signature line ${repr(line)} must start with '\u2014 '`);
    }
    const fields = line.slice(SIG_PREFIX.length).split(" ");
    if (fields.length !== 2 || !validName(fields[0])) fail(`malformed note: bad signature line ${repr(line)}`);
    const raw = strictB64(fields[1], "note signature");
    if (raw.length < 5) fail(`malformed note: signature too short in ${repr(line)}`);
    const sig = { name: fields[0], keyId: new DataView(raw.buffer).getUint32(0), signature: raw.subarray(4) };
    if (seen.has(who(sig))) fail(`malformed note: duplicate signature by ${who(sig)}`);
    seen.add(who(sig));
    signatures.push(sig);
  }
  return [text, signatures];
}

async function ed25519(pub, signature, message) {
  try {
    const key = await crypto.subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
    return await crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
  } catch (exc) {
    if (exc instanceof DOMException && exc.name === "NotSupportedError") {
      throw new VerificationError("this browser's WebCrypto has no Ed25519");
    }
    return false;
  }
}

// note.verify: the signatures of trusted keys must verify, at least one must be there
export async function verifyNote(signed, keys) {
  const trusted = new Map();
  for (const key of keys) {
    const other = trusted.get(who(key));
    if (other && other.vkey !== key.vkey) {
      fail(`two trusted keys share name and key ID: ${other.vkey} and ${key.vkey}`);
    }
    trusted.set(who(key), key);
  }
  const [text, signatures] = parseNote(signed);
  const verified = [];
  for (const sig of signatures) {
    const key = trusted.get(who(sig));
    if (!key) continue;
    if (sig.signature.length !== SIG_LENGTH[key.algorithm]) fail(`signature by ${who(sig)} has the wrong length`);
    let message = enc.encode(text), raw = sig.signature, timestamp = null;
    if (key.algorithm === COSIGNATURE) {
      timestamp = new DataView(raw.buffer, raw.byteOffset).getBigUint64(0);
      if (timestamp > (1n << 63n) - 1n) fail(`cosignature by ${who(sig)} has timestamp ${timestamp} > 2^63-1`);
      message = enc.encode(`cosignature/v1\ntime ${timestamp}\n${text}`);
      raw = raw.subarray(8);
    }
    if (!await ed25519(key.public, raw, message)) fail(`invalid signature by trusted key ${who(sig)}`);
    verified.push({ ...sig, timestamp, key });
  }
  if (!verified.length) {
    fail(`note is not signed by any trusted key (signed by: ${signatures.map(who).join(", ")})`);
  }
  return { text, verified };
}

export function parseCheckpoint(text) {
  if (!text.endsWith("\n")) fail("malformed checkpoint: does not end with a newline");
  const lines = text.slice(0, -1).split("\n");
  if (lines.length < 3) fail(`malformed checkpoint: ${lines.length} lines, expected >= 3`);
  const [origin, size, rootB64, ...extensions] = lines;
  if (!origin) fail("malformed checkpoint: empty origin");
  if (!/^(?:0|[1-9][0-9]{0,18})$/.test(size) || BigInt(size) > (1n << 63n) - 1n) {
    fail(`malformed checkpoint: bad tree size ${repr(size)}`);
  }
  const root = strictB64(rootB64, "checkpoint root");
  if (root.length !== 32) fail(`malformed checkpoint: root is ${root.length} bytes, not 32`);
  if (extensions.some((l) => !l)) fail("malformed checkpoint: empty extension line");
  return { origin, size: BigInt(size), root }; // BigInt: exact above 2^53
}

function attach(signed, lines) {
  parseNote(signed);
  const present = new Set(signed.split("\n"));
  let out = signed;
  for (const line of lines) {
    const bare = line.replace(/\n+$/, "");
    if (!present.has(bare)) { present.add(bare); out += bare + "\n"; }
  }
  parseNote(out);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Receipts and bundles (verinfer.verify.bundle): structure only

const RECEIPT_FIELDS = ["type", "log", "node", "model", "manifest", "inputs", "outputs", "mode",
  "engine", "time", "nonce"];
const DIGEST = /^sha256:[0-9a-f]{64}$/;
const NONCE = /^[A-Za-z0-9_-]{1,128}$/;
const TIME = /^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$/;
const MAX_BUNDLE_BYTES = 1 << 20;

// how many nodes answer in a receipt's mode; null if the mode is unknown
export function replicasOf(mode) {
  if (mode === "attested" || mode === "zk") return 1;
  const optimistic = typeof mode === "string" && /^optimistic:([1-9][0-9]{1,7})$/.exec(mode);
  if (optimistic) return Number(optimistic[1]) <= 365 * 86400 ? 1 : null;
  const replicated = typeof mode === "string" && /^replicated:([2-9]|1[0-6])$/.exec(mode);
  return replicated ? Number(replicated[1]) : null;
}

function sorted(keys) { return [...keys].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)); }

// ---------------------------------------------------------------------------------------------
// JSON as Python's json.loads reads it (JSON.parse would round integers above 2^53, read 0.0 as
// 0, keep the last of two equal keys and refuse NaN): integers are BigInt, numbers with a
// fraction or exponent are floats (JS numbers), NaN/Infinity/-Infinity are read, objects have
// no prototype (a key "__proto__" is a key like any other). duplicates: "refuse" (the
// verifier's parsers) or "last" (plain json.loads, as the CLI reads tensor files).

const WS = /[ \t\n\r]*/y;
const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?/y;
const ESCAPES = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };
const MAX_DEPTH = 900; // Python's json gives up (RecursionError) a little below 1000
const MAX_INT_DIGITS = 4300; // sys.get_int_max_str_digits()

class JsonError extends Error {}

export function loads(text, duplicates = "refuse") {
  let at = 0, depth = 0;
  const error = (what) => { throw new JsonError(`${what} at char ${at}`); };
  const skip = () => { WS.lastIndex = at; WS.exec(text); at = WS.lastIndex; };
  const string = () => {
    let out = "";
    at++; // the opening quote
    for (;;) {
      const c = text[at];
      if (c === undefined) error("Unterminated string starting");
      if (c === '"') { at++; return out; }
      if (c < " ") error("Invalid control character");
      if (c !== "\\") { out += c; at++; continue; }
      const e = text[at + 1];
      if (e === "u") {
        const code = text.slice(at + 2, at + 6);
        if (!/^[0-9a-fA-F]{4}$/.test(code)) error("Invalid \\uXXXX escape");
        out += String.fromCharCode(parseInt(code, 16)); // pairs join as in Python
        at += 6;
      } else if (e in ESCAPES) { out += ESCAPES[e]; at += 2; } else error("Invalid \\escape");
    }
  };
  const value = () => {
    skip();
    const c = text[at];
    if (c === '"') return string();
    if (c === "{" || c === "[") {
      if (++depth > MAX_DEPTH) error("maximum recursion depth exceeded");
      const object = c === "{", out = object ? Object.create(null) : [], seen = new Set();
      let duplicate = false;
      at++; skip();
      if (text[at] === (object ? "}" : "]")) { at++; depth--; return out; }
      for (;;) {
        if (object) {
          skip();
          if (text[at] !== '"') error("Expecting property name enclosed in double quotes");
          const key = string();
          skip();
          if (text[at] !== ":") error("Expecting ':' delimiter");
          at++;
          duplicate ||= seen.has(key);
          seen.add(key);
          out[key] = value();
        } else out.push(value());
        skip();
        if (text[at] === ",") { at++; continue; }
        if (text[at] !== (object ? "}" : "]")) error("Expecting ',' delimiter");
        at++; depth--;
        if (duplicate && duplicates === "refuse") throw new JsonError("duplicate object key");
        return out;
      }
    }
    for (const [word, literal] of [["null", null], ["true", true], ["false", false],
      ["NaN", NaN], ["Infinity", Infinity], ["-Infinity", -Infinity]]) {
      if (text.startsWith(word, at)) { at += word.length; return literal; }
    }
    NUMBER.lastIndex = at;
    const number = NUMBER.exec(text);
    if (!number) error("Expecting value");
    at = NUMBER.lastIndex;
    if (number[1] === undefined && number[2] === undefined) {
      if (number[0].replace("-", "").length > MAX_INT_DIGITS) error("Exceeds the limit (4300 digits) for integer string conversion");
      return BigInt(number[0]);
    }
    return Number(number[0]);
  };
  const found = value();
  skip();
  if (at !== text.length) error("Extra data");
  return found;
}

// json.loads(text.encode()): bytes are decoded as Python detects their encoding (a UTF-8 BOM
// is dropped; text whose first bytes are zero is read as UTF-16 or UTF-32)
export function pythonText(text) {
  const b = enc.encode(text);
  if (b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf) return text.slice(1);
  if (b.length < 4 || (b[0] && b[1])) return text;
  const kind = !b[0] ? (b[1] ? "utf-16be" : "utf-32be") : (b[2] || b[3] ? "utf-16le" : "utf-32le");
  if (kind.startsWith("utf-16")) return new TextDecoder(kind, { fatal: true }).decode(b);
  if (b.length % 4) throw new JsonError("'utf-32' codec can't decode: truncated data");
  const view = new DataView(b.buffer), little = kind === "utf-32le";
  let out = "";
  for (let i = 0; i < b.length; i += 4) {
    const code = view.getUint32(i, little);
    if (code > 0x10ffff) throw new JsonError("'utf-32' codec can't decode: code point not in range");
    out += String.fromCodePoint(code);
  }
  return out;
}

function parseJson(text, what) {
  try { return loads(pythonText(text)); } catch (exc) {
    if (exc instanceof JsonError || exc instanceof TypeError) fail(`malformed ${what}: ${exc.message}`);
    throw exc;
  }
}

export function parseReceipt(text) {
  const body = parseJson(text, "receipt");
  const keys = isObject(body) ? Object.keys(body).filter((k) => k !== "audit") : null;
  if (!keys || keys.length !== RECEIPT_FIELDS.length || !RECEIPT_FIELDS.every((f) => f in body)) {
    fail(`malformed receipt: fields ${repr(isObject(body) ? sorted(Object.keys(body)) : typeName(body))}`);
  }
  if ("audit" in body && body.audit !== "public") fail(`malformed receipt: audit ${repr(body.audit)}`);
  if (body.type !== "verinfer.receipt/v1") fail(`unsupported receipt type ${repr(body.type)}`);
  for (const name of ["log", "node", "engine"]) {
    if (typeof body[name] !== "string" || !body[name]) fail(`malformed receipt: ${name} ${repr(body[name])}`);
  }
  try {
    cidDigest(body.model);
    if (body.manifest !== null) cidDigest(body.manifest);
    if (body.nonce !== null && (typeof body.nonce !== "string" || !NONCE.test(body.nonce))) {
      fail(`malformed nonce ${repr(body.nonce)}: use 1-128 of A-Z a-z 0-9 _ -`);
    }
  } catch (exc) { fail(`malformed receipt: ${exc.message}`); }
  for (const name of ["inputs", "outputs"]) {
    if (typeof body[name] !== "string" || !DIGEST.test(body[name])) {
      fail(`malformed receipt: ${name} digest ${repr(body[name])}`);
    }
  }
  if (replicasOf(body.mode) === null) fail(`malformed receipt: unknown mode ${repr(body.mode)}`);
  if (typeof body.time !== "string" || !TIME.test(body.time)) fail(`malformed receipt: time ${repr(body.time)}`);
  return { data: enc.encode(text), body, get: (n) => (n === "audit" ? body.audit ?? "private" : body[n]) };
}

export function parseBundle(value, replica = false) {
  if (typeof value === "string") {
    if (!encodable(value)) fail("malformed bundle: not valid Unicode");
    if (enc.encode(value).length > MAX_BUNDLE_BYTES) fail(`malformed bundle: larger than ${MAX_BUNDLE_BYTES} bytes`);
    value = parseJson(value, "bundle");
  }
  const expected = ["type", "receipt", "index", "proof", "checkpoint", "cosignatures", "evidence"];
  if (!isObject(value) || Object.keys(value).length !== expected.length || !expected.every((f) => f in value)) {
    fail(`malformed bundle: fields ${repr(isObject(value) ? sorted(Object.keys(value)) : typeName(value))}`);
  }
  if (value.type !== "verinfer.bundle/v1") fail(`unsupported bundle type ${repr(value.type)}`);
  if (typeof value.receipt !== "string") fail("malformed bundle: receipt must be its JSON text");
  const index = value.index;
  if (!isInt(index) || index < 0) fail(`malformed bundle: index ${repr(index)}`);
  if (!Array.isArray(value.proof) || value.proof.length > 64) {
    fail("malformed bundle: proof must be a list of at most 64 hashes");
  }
  const proof = value.proof.map((item, position) => {
    const raw = b64decode(item);
    if (raw === null) fail(`malformed bundle: proof hash ${position}`);
    if (raw.length !== 32 || b64encode(raw) !== item) {
      fail(`malformed bundle: proof hash ${position} is not 32 bytes in canonical base64`);
    }
    return raw;
  });
  if (typeof value.checkpoint !== "string") fail("malformed bundle: checkpoint must be a signed note");
  const cosignatures = value.cosignatures;
  // str.isprintable() follows Python's Unicode version (3.11: Unicode 14), the browser's \p{C}
  // a newer one (15,000 more code points assigned): beyond ASCII a line is refused here rather
  // than read as printable where Python would not (witness names are ASCII in practice)
  const line = (c) => (c.endsWith("\n") ? c.slice(0, -1) : c).replace(/^\u2014/, "");
  if (!Array.isArray(cosignatures) || !cosignatures.every(
    (c) => typeof c === "string" && /^[\x20-\x7e]*$/.test(line(c)))) {
    fail("malformed bundle: cosignatures must be a list of lines");
  }
  if (!encodable(value.receipt)) fail("malformed bundle: the receipt is not valid Unicode");
  const receipt = parseReceipt(value.receipt);
  const bundle = { receipt, index, proof, checkpoint: value.checkpoint, cosignatures, replicas: [],
    compared: [], manifest: "", deviation: 0, zk: null };
  if (receipt.get("mode") === "zk") {
    const e = value.evidence;
    const zk = isObject(e) && Object.keys(e).length === 1 && "zk" in e ? e.zk : null;
    if (!isObject(zk) || Object.keys(zk).length !== 2 || !("addendum" in zk) || !("proof" in zk)) {
      fail("malformed bundle: zk evidence must hold an addendum and a proof");
    }
    try { cidDigest(zk.addendum); } catch (exc) { fail(`malformed bundle: zk addendum: ${exc.message}`); }
    if (typeof zk.proof !== "string" || !zk.proof || !encodable(zk.proof)) {
      fail("malformed bundle: the zk proof must be its JSON text");
    }
    bundle.zk = zk;
    return bundle;
  }
  parseEvidence(bundle, value.evidence, receipt.get("mode"), replica);
  return bundle;
}

function parseEvidence(bundle, evidence, mode, replica) {
  const wanted = replica ? 0 : replicasOf(mode) - 1;
  if (wanted === 0) {
    if (!isObject(evidence) || Object.keys(evidence).length) {
      fail(`malformed bundle: evidence must be empty for ${replica ? "a replica" : mode}`);
    }
    return;
  }
  const keys = isObject(evidence) ? sorted(Object.keys(evidence)).join(",") : "";
  if (keys !== "replicas" && keys !== "deviation,manifest,outputs,replicas") {
    fail(`malformed bundle: evidence of ${mode} must hold only 'replicas' (and, across engine `
      + "classes, 'outputs', 'manifest' and 'deviation')");
  }
  const items = evidence.replicas;
  if (!Array.isArray(items) || items.length !== wanted) {
    fail(`malformed bundle: ${mode} needs ${wanted} replica bundles in its evidence`);
  }
  bundle.replicas = items.map((item, position) => {
    if (!isObject(item)) fail(`malformed bundle: replica ${position} is not an object`);
    try { return parseBundle(item, true); } catch (exc) { fail(`replica ${position}: ${exc.message}`); }
  });
  if (!("outputs" in evidence)) return;
  const { outputs, manifest, deviation } = evidence;
  if (!Array.isArray(outputs) || outputs.length !== wanted + 1) {
    fail(`malformed bundle: evidence outputs must be ${wanted + 1} .npz`);
  }
  bundle.compared = outputs.map((text, position) => {
    const raw = b64decode(text);
    if (raw === null) fail(`malformed bundle: evidence outputs ${position}`);
    return raw;
  });
  if (typeof manifest !== "string" || !encodable(manifest)) {
    fail("malformed bundle: evidence manifest must be its text");
  }
  const amount = typeof deviation === "bigint" ? Number(deviation) : typeof deviation === "number" ? deviation : -1;
  if (!(amount >= 0 && amount < Infinity)) {
    fail(`malformed bundle: evidence deviation ${repr(deviation)}`);
  }
  Object.assign(bundle, { manifest, deviation });
}

// ---------------------------------------------------------------------------------------------
// What the caller trusts, read as `verinfer verify` reads its files (verinfer.verify.trust,
// cli/_app.py): a trust root or node keys a line; witness keys a line, each optionally with
// its operator, or a network.json

const TRUST_FIELDS = ["type", "nodes", "witnesses", "operators", "publishers", "srs"];
const MAX_TRUST_BYTES = 1 << 20;
const pyStr = (x) => (typeof x === "string" ? x : repr(x)); // str() of a parsed JSON value

async function vkeysOf(values, what) {
  const found = [];
  for (const value of values) {
    try { found.push((await parseKey(value)).vkey); } catch (exc) { wrap(`trust root: ${what}: `, exc); }
  }
  return found;
}

// TrustRoot.from_json: {nodes, witnesses, operators, publishers, srs}, every key checked
export async function parseTrustRoot(text) {
  if (enc.encode(text).length > MAX_TRUST_BYTES) fail(`trust root: larger than ${MAX_TRUST_BYTES} bytes`);
  let value;
  try { value = loads(pythonText(text)); } catch (exc) {
    if (!(exc instanceof JsonError || exc instanceof TypeError)) throw exc;
    fail(`trust root: not JSON: ${exc.message === "duplicate object key" ? "a key is given twice" : exc.message}`);
  }
  if (!isObject(value) || value.type !== "verinfer.trust/v1") fail("trust root: not a verinfer.trust/v1 object");
  const unknown = sorted(Object.keys(value).filter((k) => !TRUST_FIELDS.includes(k)));
  if (unknown.length) fail(`trust root: unknown fields ${repr(unknown)}`);
  const lists = {};
  for (const name of ["nodes", "witnesses", "publishers", "srs"]) {
    const items = name in value ? value[name] : [];
    if (!Array.isArray(items) || !items.every((i) => typeof i === "string")) {
      fail(`trust root: ${name} must be a list of strings`);
    }
    lists[name] = items;
  }
  const operators = "operators" in value ? value.operators : {};
  if (!isObject(operators) || !Object.values(operators).every((v) => typeof v === "string")) {
    fail("trust root: operators must map keys to operator labels");
  }
  for (const item of lists.srs) {
    try { cidDigest(item); } catch (exc) { wrap("trust root: srs: ", exc); }
  }
  const nodes = await vkeysOf(lists.nodes, "nodes"), witnesses = await vkeysOf(lists.witnesses, "witnesses");
  const labels = Object.create(null);
  for (const [key, label] of Object.entries(operators)) labels[(await vkeysOf([key], "operators"))[0]] = label;
  return { nodes, witnesses, operators: labels, publishers: await vkeysOf(lists.publishers, "publishers"),
    srs: lists.srs };
}

// `verinfer verify --trust FILE`: a trust root, or node keys one per line (# starts a comment)
export async function readTrust(text) {
  if (/^[ \t\n\r\v\f]*\{/.test(text.slice(0, 64))) {
    const root = await parseTrustRoot(text);
    if (!root.nodes.length) fail("trust root lists no node keys");
    return root;
  }
  const nodes = [];
  for (const [number, line] of pyLines(text).entries()) {
    const key = pyStrip(line.split("#")[0]);
    if (!key) continue;
    try { nodes.push((await parseKey(key)).vkey); } catch (exc) { wrap(`trust keys line ${number + 1}: `, exc); }
  }
  if (!nodes.length) fail("the trust keys list no keys");
  return { nodes, witnesses: [], operators: {}, publishers: [], srs: [] };
}

// `--witnesses FILE`: [keys, operators]
export async function readWitnesses(text) {
  const keys = [], operators = Object.create(null);
  if (pyStrip(text).startsWith("{")) {
    try {
      for (const node of loads(pythonText(text), "last").nodes) {
        if (node.witness === null || node.witness === undefined) continue;
        const vkey = (await parseKey(pyStr(node.vkey))).vkey, witness = (await parseKey(pyStr(node.witness))).vkey;
        const given = node.operator;
        const empty = (Array.isArray(given) && !given.length) || (isObject(given) && !Object.keys(given).length);
        const operator = (given || Number.isNaN(given)) && !empty ? pyStr(given) : vkey; // `or`

        keys.push(witness);
        operators[witness] = operator; operators[vkey] = operator;
      }
    } catch (exc) { fail(`the network file is malformed: ${exc.message}`); }
  }
  for (const [number, line] of (keys.length ? [] : pyLines(text)).entries()) {
    const fields = pySplit(line.split("#")[0]);
    if (!fields.length) continue;
    if (fields.length > 2) fail(`witnesses line ${number + 1}: expected a vkey and optionally its operator`);
    let key;
    try { key = (await parseKey(fields[0])).vkey; } catch (exc) { wrap(`witnesses line ${number + 1}: `, exc); }
    keys.push(key);
    if (fields.length === 2) operators[key] = fields[1];
  }
  if (!keys.length) fail("the witnesses list no witness keys");
  return [keys, operators];
}

// what `verinfer verify --trust T --witnesses W --quorum Q` checks against: the root's witnesses
// and the file's, and the root's operator labels over the file's
export async function trustOptions(trustText, witnessesText, quorum) {
  const root = await readTrust(trustText);
  if (quorum && !witnessesText.trim() && !root.witnesses.length) {
    fail("--quorum needs --witnesses FILE (or witnesses in the trust root)");
  }
  let witnesses = root.witnesses, operators = root.operators;
  if (witnessesText.trim()) {
    const [found, labels] = await readWitnesses(witnessesText);
    witnesses = [...witnesses, ...found];
    operators = Object.assign(Object.create(null), labels, root.operators); // the root's labels win
  }
  return { trusted: root.nodes, witnesses, operators, quorum };
}

// json.dumps of a value loads read (integers exact, floats as Python writes them)
export function dumps(value) {
  if (value === null) return "null";
  if (typeof value === "bigint") return String(value);
  if (typeof value === "number") {
    if (Number.isFinite(value)) return floatRepr(value);
    return Number.isNaN(value) ? "NaN" : value > 0 ? "Infinity" : "-Infinity";
  }
  if (typeof value === "string" || typeof value === "boolean") return JSON.stringify(value);
  if (Array.isArray(value)) return "[" + value.map(dumps).join(", ") + "]";
  return "{" + Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${dumps(v)}`).join(", ") + "}";
}

// equivocation evidence: two checkpoints of one log and size with different roots, both
// signed by the log's key — the key the caller knows for that log (vkey), never one the
// evidence names. Resolves to the size, or throws why it does not hold.
export async function verifyEquivocation(evidence, vkey) {
  const key = await parseKey(vkey);
  if (!isObject(evidence) || !Array.isArray(evidence.checkpoints) || evidence.checkpoints.length !== 2) {
    fail("malformed equivocation evidence: it needs two signed checkpoints");
  }
  const found = [];
  for (const signed of evidence.checkpoints) found.push(parseCheckpoint((await verifyNote(signed, [key])).text));
  const [first, second] = found;
  if (first.origin !== evidence.log || second.origin !== evidence.log) {
    fail(`the checkpoints are of log ${repr(first.origin)} and ${repr(second.origin)}, not ${repr(evidence.log)}`);
  }
  if (first.size !== second.size) fail("the two checkpoints are of different sizes");
  if (equal(first.root, second.root)) fail("the two checkpoints have the same root");
  return first.size;
}

// ---------------------------------------------------------------------------------------------
// The verifier (verinfer.verify.verifier)

const KERNEL_CLASSES = ["avx512vnni", "avx512", "avxvnni", "avx2", "avx", "sse4", "x86_64",
  "aarch64", "arm64", "unknown"];

function kernelClassOf(engine) {
  const at = engine.lastIndexOf("/");
  const prefix = at < 0 ? "" : engine.slice(0, at), kernel = engine.slice(at + 1);
  if (!prefix || !KERNEL_CLASSES.includes(kernel)) {
    fail(`engine ${repr(engine)} names kernel class ${repr(kernel)}, which is not one verinfer `
      + `knows (${sorted(KERNEL_CLASSES).join(", ")})`);
  }
  return kernel;
}

function wrap(prefix, exc) {
  if (exc instanceof VerificationError) throw new VerificationError(`${prefix}${exc.message}`);
  throw exc;
}

async function checkpointOf(bundle, trusted) {
  const receipt = bundle.receipt;
  if (!trusted.includes(receipt.get("node"))) {
    fail(`step 1 (checkpoint): the receipt's node ${repr(receipt.get("node"))} is not a trusted key`);
  }
  let checkpoint;
  try {
    const { text } = await verifyNote(bundle.checkpoint, [await parseKey(receipt.get("node"))]);
    checkpoint = parseCheckpoint(text);
  } catch (exc) { wrap("step 1 (checkpoint): ", exc); }
  if (checkpoint.origin !== receipt.get("log")) {
    fail(`step 1 (checkpoint): checkpoint of log ${repr(checkpoint.origin)}, receipt names `
      + repr(receipt.get("log")));
  }
  return checkpoint;
}

async function inclusion(bundle, checkpoint) {
  try {
    await verifyInclusion(await leafHash(bundle.receipt.data), bundle.index, checkpoint.size,
      bundle.proof, checkpoint.root);
  } catch (exc) { wrap("step 2 (inclusion): ", exc); }
}

async function operatorOf(key, operators) {
  const seen = new Set();
  for (;;) {
    const given = operators.get(key.vkey);
    if (given === undefined) return "key:" + hex(key.public);
    if (seen.has(given)) return "cycle:" + sorted(seen)[0];
    seen.add(given);
    try { key = await parseKey(given); } catch { return "operator:" + given; }
  }
}

async function cosigned(bundle, witnesses, quorum, operatorsGiven) {
  const operators = new Map();
  for (const [vkey, operator] of Object.entries(operatorsGiven)) {
    try { operators.set((await parseKey(vkey)).vkey, String(operator)); } catch (exc) {
      wrap("step 1+ (witnesses): the operators map: ", exc);
    }
  }
  const receipt = bundle.receipt;
  const node = await parseKey(receipt.get("node"));
  const own = await operatorOf(node, operators);
  const ownNames = new Set([`${node.name}/witness`, `${receipt.get("log")}/witness`]);
  const cosigners = [];
  for (const w of witnesses) {
    const key = await parseKey(w);
    if (key.algorithm === COSIGNATURE) cosigners.push(key);
  }
  const isOwn = async (key) => (await operatorOf(key, operators)) === own
    || equal(key.public, node.public) || ownNames.has(key.name);
  const independent = new Set();
  for (const key of cosigners) if (!await isOwn(key)) independent.add(await operatorOf(key, operators));
  if (independent.size < quorum) {
    fail(`step 1+ (witnesses): a quorum of ${quorum} needs as many trusted witness keys `
      + `(cosigner keys) of distinct operators other than the log's, ${independent.size} given`);
  }
  let verified;
  try {
    verified = (await verifyNote(attach(bundle.checkpoint, bundle.cosignatures), cosigners)).verified;
  } catch (exc) { wrap("step 1+ (witnesses): ", exc); }
  const counted = new Set(), ignored = new Set();
  for (const signature of verified) {
    if (signature.timestamp === null) continue;
    if (await isOwn(signature.key)) ignored.add(signature.key.name);
    else counted.add(await operatorOf(signature.key, operators));
  }
  if (counted.size < quorum) {
    const why = ignored.size ? ` (not counted: ${sorted(ignored).join(", ")}, the log's own `
      + "operator's; a log's own witness never counts toward its quorum)" : "";
    fail(`step 1+ (witnesses): ${counted.size} trusted witnesses of distinct operators other `
      + `than the log's cosigned the checkpoint, the policy needs ${quorum}${why}`);
  }
  return counted.size;
}

// the key material of name+hash+key: its base64 may hold "+" itself, so all after the second
const publicKey = (vkey) => vkey.split("+").slice(2).join("+");

async function agreement(bundle, trusted) {
  const primary = bundle.receipt;
  const keys = new Set([publicKey(primary.get("node"))]);
  const receipts = [primary];
  try { kernelClassOf(primary.get("engine")); } catch (exc) {
    fail(`step 2+ (agreement): the first receipt's ${exc.message}`);
  }
  for (const [i, replica] of bundle.replicas.entries()) {
    const position = i + 1, receipt = replica.receipt;
    try { await inclusion(replica, await checkpointOf(replica, trusted)); } catch (exc) {
      wrap(`replica ${position}: `, exc);
    }
    const key = publicKey(receipt.get("node"));
    if (keys.has(key)) {
      fail(`step 2+ (agreement): replica ${position} comes from node ${repr(receipt.get("node"))} `
        + `again; ${primary.get("mode")} needs distinct nodes`);
    }
    keys.add(key);
    try { kernelClassOf(receipt.get("engine")); } catch (exc) {
      fail(`step 2+ (agreement): replica ${position}'s ${exc.message}`);
    }
    for (const name of ["mode", "model", "inputs", "nonce", "audit"]) {
      if (receipt.get(name) !== primary.get(name)) {
        fail(`step 2+ (agreement): replica ${position} has ${name} ${repr(receipt.get(name))}, `
          + `the first receipt ${repr(primary.get(name))}`);
      }
    }
    receipts.push(receipt);
  }
  if (new Set(receipts.map((r) => r.get("outputs"))).size === 1) {
    if (bundle.compared.length || bundle.manifest || bundle.deviation) {
      fail("step 2+ (agreement): the outputs agree bit for bit, yet the bundle carries outputs "
        + "for a tolerance comparison: nothing unchecked rides along");
    }
    return "bit for bit";
  }
  const byEngine = new Map();
  for (const receipt of receipts) {
    if (!byEngine.has(receipt.get("engine"))) byEngine.set(receipt.get("engine"), receipt);
    const first = byEngine.get(receipt.get("engine"));
    if (receipt.get("outputs") !== first.get("outputs")) {
      fail(`step 2+ (agreement): node ${repr(receipt.get("node"))} answered outputs `
        + `${receipt.get("outputs")}, node ${repr(first.get("node"))} ${first.get("outputs")} on the `
        + "same engine: the nodes disagree");
    }
  }
  if (!bundle.compared.length) {
    fail("step 2+ (agreement): the nodes ran on different engine classes "
      + `(${sorted(new Set(receipts.map((r) => r.get("engine")))).join(", ")}) and gave different `
      + "outputs; the bundle carries no outputs and manifest to compare them within a tolerance");
  }
  // decoding .npz outputs and the signed manifest's tolerance is left to `verinfer verify`
  fail("step 2+ (agreement): outputs compared within a tolerance across engine classes are "
    + "checked by `verinfer verify`, not in the browser");
}

// verify_bundle: resolves to the lines of the steps that passed, or throws VerificationError
export async function verifyParsed(bundle, options = {}) {
  const steps = [];
  const say = (line) => { steps.push(line); options.report?.(line); };
  const trusted = [...(options.trusted ?? [])];
  const receipt = bundle.receipt;
  const checkpoint = await checkpointOf(bundle, trusted);
  say(`1. checkpoint of size ${checkpoint.size} is signed by trusted node ${receipt.get("node")}`);
  const quorum = options.quorum ?? 0;
  if (quorum > 0) {
    const count = await cosigned(bundle, options.witnesses ?? [], quorum, options.operators ?? {});
    say(`1+. ${count} trusted witnesses cosigned that checkpoint, each of another operator and `
      + `none the log's own (quorum ${quorum})`);
  }
  await inclusion(bundle, checkpoint);
  say(`2. receipt is entry ${bundle.index} of that log (${bundle.proof.length}-hash proof)`);
  if (bundle.replicas.length) {
    const how = await agreement(bundle, trusted);
    say(`2+. ${bundle.replicas.length + 1} receipts from distinct trusted nodes, each in its `
      + `node's signed log, agree on model, inputs and outputs (${how})`);
  }
  if (options.model) {
    const digest = cidDigest(receipt.get("model"));
    if (!equal(await sha256(options.model), digest)) {
      fail(`step 3 (model): content does not match CID ${repr(receipt.get("model"))} (got `
        + `${repr(await cidCompute(options.model))})`);
    }
    say(`3. model bytes are ${receipt.get("model")}`);
  }
  for (const [step, name] of [[4, "inputs"], [5, "outputs"]]) {
    const given = options[name]; // decoded (decodeTensors, decodeNpz)
    if (!given) continue;
    let found;
    try { found = await mapDigest(given); } catch (exc) { wrap(`step ${step} (${name}): `, exc); }
    if (found !== receipt.get(name)) {
      fail(`step ${step} (${name}): the given ${name} have digest ${found}, the receipt says `
        + receipt.get(name));
    }
    say(`${step}. ${name} match the receipt's digest ${found}`);
  }
  if (receipt.get("mode") === "zk") {
    // the browser holds no circuit materials and runs no ezkl: as the CLI says without them
    fail("step 7 (zk) needs the inputs, the outputs and the circuit materials (the addendum, the "
      + "manifest, the settings, the verification key and the SRS, by CID)");
  }
  return steps;
}

// what `verinfer verify` prints: the steps that passed, then "valid: ..." or the error
export async function verify(bundleText, options = {}) {
  const steps = [];
  const report = (line) => { steps.push(line); options.report?.(line); };
  try {
    const bundle = parseBundle(bundleText);
    // the claimed tensors are read after the bundle, before any step (as `verinfer verify`)
    const claims = {};
    for (const name of ["inputs", "outputs"]) {
      if (options[name]) claims[name] = decodeTensors(options[name]);
    }
    await verifyParsed(bundle, { ...options, ...claims, report });
    const r = bundle.receipt;
    return { ok: true, steps, error: null, valid: `valid: ${r.get("mode")} answer of model ${r.get("model")}` };
  } catch (exc) {
    if (!(exc instanceof VerificationError)) throw exc;
    return { ok: false, steps, error: exc.message, valid: null };
  }
}

// ---------------------------------------------------------------------------------------------
// Generations (PROTOCOL.md §16): the record's tensors, the sampler, the offline checks G1-G3 of
// verinfer.modes.generation (without the tokenizer: why a "stop" ended is not checked here)

export const TOP = 8;
const SAMPLER_DOMAIN = enc.encode("verinfer/sampler/v1\0");
const MAX_SEED = 2 ** 53 - 1, MAX_TOKENS = 4096;
const SAMPLING_FIELDS = ["max_tokens", "seed", "stop", "temperature", "top_k", "top_p"];
const FINISHES = ["length", "stop"];

// sampler.uniform: the first 8 bytes of SHA-256(domain || seed u64 BE || position u32 BE) / 2**64
export async function uniform(seed, position) {
  const tail = new DataView(new ArrayBuffer(12));
  tail.setBigUint64(0, BigInt(seed));
  tail.setUint32(8, Number(position));
  const digest = await sha256(concat(SAMPLER_DOMAIN, new Uint8Array(tail.buffer)));
  return Number(new DataView(digest.buffer, digest.byteOffset).getBigUint64(0)) / 18446744073709551616;
}

// sampler.choose: the token picked from one position's committed candidates (highest first);
// sampling's fields are plain numbers. Math.exp stands for Python's math.exp (both IEEE double;
// they may differ in the last bit, which could only matter at an exact tie of a draw)
export async function choose(ids, values, sampling, position) {
  if (!ids.length || ids.length !== values.length) fail("no candidates to choose from");
  if (sampling.temperature === 0) return ids[0];
  const count = Math.min(sampling.top_k, ids.length);
  const first = values[0];
  const weights = values.slice(0, count).map((x) => Math.exp((x - first) / sampling.temperature));
  let total = 0;
  for (const w of weights) total += w;
  let kept = 0, mass = 0;
  while (kept < count) {
    mass += weights[kept] / total;
    kept += 1;
    if (mass >= sampling.top_p) break;
  }
  let keptTotal = 0;
  for (const w of weights.slice(0, kept)) keptTotal += w;
  const draw = await uniform(sampling.seed, position);
  let cumulative = 0;
  for (let index = 0; index < kept; index++) {
    cumulative += weights[index] / keptTotal;
    if (draw < cumulative) return ids[index];
  }
  return ids[kept - 1]; // rounding left the sum just below the draw
}

const isNumber = (x) => (typeof x === "bigint" || typeof x === "number");

// Sampling.from_json: the parameters as plain numbers, refused where Python refuses them
function samplingOf(body) {
  const bad = (why) => fail(`malformed generation: ${why}`);
  if (!isObject(body) || sorted(Object.keys(body)).join() !== SAMPLING_FIELDS.join()) {
    bad(`malformed sampling parameters: ${repr(body)}`);
  }
  if (!Array.isArray(body.stop)) bad(`stop must be a list of strings, got ${repr(body.stop)}`);
  for (const name of ["temperature", "top_p"]) {
    if (!isNumber(body[name])) bad(`${name} must be a number, got ${repr(body[name])}`);
    if (!Number.isFinite(Number(body[name]))) bad(`${name} must be finite, got ${repr(body[name])}`);
  }
  const temperature = Number(body.temperature), topP = Number(body.top_p);
  if (!(temperature >= 0 && temperature <= 2)) bad(`temperature must be in [0, 2], got ${repr(body.temperature)}`);
  if (!(topP > 0 && topP <= 1)) bad(`top_p must be in (0, 1], got ${repr(body.top_p)}`);
  for (const [name, low, high] of [["top_k", 1, TOP], ["seed", 0, MAX_SEED], ["max_tokens", 1, MAX_TOKENS]]) {
    const x = body[name];
    if (!isInt(x) || x < BigInt(low) || x > BigInt(high)) {
      bad(`${name} must be an integer in [${low}, ${high}], got ${repr(x)}`);
    }
  }
  if (body.stop.length > 4) bad(`stop must be at most 4 strings, got ${repr(body.stop)}`);
  for (const text of body.stop) {
    if (typeof text !== "string" || ![...text].length || [...text].length > 64 || !encodable(text)) {
      bad(`a stop string must have 1-64 characters, got ${repr(text)}`);
    }
  }
  const sampling = { max_tokens: Number(body.max_tokens), seed: Number(body.seed), stop: [...body.stop],
    temperature, top_k: Number(body.top_k), top_p: topP };
  // the bytes the receipt's input digest covers: RFC 8785 (the keys above are in its order;
  // JSON.stringify writes numbers and strings as RFC 8785 does)
  const canonical = "{" + SAMPLING_FIELDS.map((k) => `${JSON.stringify(k)}:${JSON.stringify(sampling[k])}`).join(",") + "}";
  return [sampling, enc.encode(canonical)];
}

// Generation.from_json and its inputs()/outputs() tensor maps, from the record's JSON (text,
// or a value read by loads). Rows of top_ids/top_logits must be nested lists of TOP.
export function parseGeneration(record) {
  if (typeof record === "string") {
    try { record = loads(pythonText(record), "last"); } catch (exc) {
      if (exc instanceof JsonError || exc instanceof TypeError) fail(`malformed generation: ${exc.message}`);
      throw exc;
    }
  } else if (!(record instanceof Object) || Object.getPrototypeOf(record) !== null) record = pyValue(record);
  const fields = ["finish", "prompt", "sampling", "tokens", "top_ids", "top_logits"];
  if (!isObject(record) || sorted(Object.keys(record)).join() !== fields.join()) {
    fail(`malformed generation: fields ${repr(isObject(record) ? sorted(Object.keys(record)) : typeName(record))}`);
  }
  const [sampling, samplingBytes] = samplingOf(record.sampling);
  const ids = (name) => {
    const x = record[name];
    if (!Array.isArray(x) || !x.every((i) => isInt(i) && i >= 0n && i < 1n << 31n)) {
      fail(`malformed generation: ${name} must be token IDs`);
    }
    return x.map(Number);
  };
  const prompt = ids("prompt"), tokens = ids("tokens");
  const rows = (name, ok) => {
    const x = record[name];
    if (!Array.isArray(x) || x.length !== tokens.length
      || !x.every((row) => Array.isArray(row) && row.length === TOP && row.every(ok))) {
      fail(`malformed generation: top_ids and top_logits must be ${tokens.length} rows of ${TOP}`);
    }
    return x.map((row) => row.map(Number));
  };
  const topIds = rows("top_ids", isInt), topLogits = rows("top_logits", isNumber);
  if (topIds.flat().some((i) => i < 0 || i >= 1 << 16)) fail("malformed generation: a top_ids entry is out of range");
  if (topLogits.flat().some((x) => !Object.is(Math.f16round(x), x) && !Number.isNaN(x))) {
    fail("malformed generation: top_logits must be float16 values");
  }
  if (!FINISHES.includes(record.finish)) fail(`malformed generation: finish ${repr(record.finish)}`);
  const tensor = (name, dtype, shape, data) => decodeTensor(name, pyValue({ dtype, shape, data }));
  const count = tokens.length;
  const bytes = (raw) => ({ dtype: "uint8", shape: [BigInt(raw.length)], bytes: raw });
  return {
    prompt, sampling, tokens, topIds, topLogits, finish: record.finish,
    inputs: { prompt: tensor("prompt", "int64", [prompt.length], prompt), sampling: bytes(samplingBytes) },
    outputs: {
      tokens: tensor("tokens", "int64", [count], tokens),
      top_ids: tensor("top_ids", "uint16", [count, TOP], topIds),
      top_logits: tensor("top_logits", "float16", [count, TOP], topLogits),
      finish: bytes(enc.encode(record.finish)),
    },
  };
}

// modes.generation.verify_generation without the tokenizer: steps 1-2 and 4-5 over the
// record's tensors, G1, G2 and the part of G3 that needs no tokenizer. The lines and the
// verdict, as verify() gives them
export async function verifyGeneration(bundleText, record, options = {}) {
  const steps = [];
  const say = (line) => { steps.push(line); options.report?.(line); };
  try {
    const bundle = parseBundle(bundleText);
    const g = parseGeneration(record);
    await verifyParsed(bundle, { ...options, inputs: g.inputs, outputs: g.outputs, report: say });
    const count = g.tokens.length;
    g.topIds.forEach((row, position) => {
      const values = g.topLogits[position];
      if (new Set(row).size !== TOP || !values.every(Number.isFinite)) {
        fail(`step G1 (commitments): position ${position} is malformed`);
      }
      if (values.some((x, i) => i > 0 && x - values[i - 1] > 0)) {
        fail(`step G1 (commitments): position ${position}'s logits are not highest first`);
      }
    });
    say(`G1. ${count} positions each commit ${TOP} candidates, highest first`);
    for (const [position, token] of g.tokens.entries()) {
      const picked = await choose(g.topIds[position], g.topLogits[position], g.sampling, position);
      if (picked !== token) {
        fail(`step G2 (sampler): at position ${position} the sampler picks token ${picked}, `
          + `the generation has ${token}`);
      }
    }
    say(`G2. replaying the sampler (seed ${g.sampling.seed}) gives every generated token`);
    if (count > g.sampling.max_tokens) fail(`step G3 (end): ${count} tokens, max_tokens ${g.sampling.max_tokens}`);
    const ends = options.ends ? new Set(options.ends.map(Number)) : null; // IDs that end a turn
    if (ends) {
      const early = g.tokens.slice(0, -1).findIndex((t) => ends.has(t));
      if (early >= 0) fail(`step G3 (end): the turn ended at position ${early}`);
    }
    let why = "; why it ended ('stop') needs the tokenizer: not checked here";
    if (g.finish === "length") {
      if (count !== g.sampling.max_tokens) {
        fail(`step G3 (end): finish 'length' after ${count} tokens, max_tokens is `
          + `${g.sampling.max_tokens}: the output was cut short`);
      }
      why = ", ended by length at exactly max_tokens";
    } else if (ends && !g.sampling.stop.length) { // no stop strings: only an end of turn stops
      if (!(count > 0 && ends.has(g.tokens[count - 1]))) {
        fail("step G3 (end): finish 'stop', but the last token neither ends the turn nor "
          + "completes a stop string: the output was cut short");
      }
      why = ", ended by the end-of-turn token and not before";
    } else if (ends) why = "; no earlier end of turn (whether a stop string ended it is not checked here)";
    say(`G3. ${count} tokens, at most max_tokens ${g.sampling.max_tokens}${why}`);
    const r = bundle.receipt;
    if (options.manifest) { // {cid, model}: the manifest the page shows, its CID computed here
      if (options.manifest.cid !== r.get("manifest") || options.manifest.model !== r.get("model")) {
        fail("step G4 (manifest): not the receipt's manifest and model");
      }
      say(`G4. manifest ${options.manifest.cid} of model ${options.manifest.model}`);
    }
    return { ok: true, steps, error: null,
      valid: `valid: ${count} generated tokens of model ${r.get("model")}` };
  } catch (exc) {
    if (!(exc instanceof VerificationError)) throw exc;
    return { ok: false, steps, error: exc.message, valid: null };
  }
}
