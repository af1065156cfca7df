// Portico's edge worker: a Workers-style module (Cloudflare Workers,
// workerd) that accepts VLESS-over-WebSocket tunnels at the edge.
//
// Environment (vars or secrets):
//   UUIDS     comma-separated user UUIDs (direct mode)
//   WS_PATH   the tunnel path, default "/"
//   MODE      "direct" (default): parse VLESS here and connect() to the target
//             "origin": relay the WebSocket unchanged to ORIGIN
//   ORIGIN    origin mode: the gateway's WebSocket URL (https://host/path or
//             wss://…; the request's path and query are not appended)
//   DECOY     "static" (default): a small static page; or an http(s) URL
//             whose response is returned for everything that is not a tunnel
//   DECOY_HTML optional body of the static page
//   SELFTEST  "1" enables POST /__portico_selftest (codec vectors, for tests)
//
// The VLESS header is parsed, and the response header built, by Portico's
// Go codec (protocols/vless) compiled to WebAssembly (codec.wasm, see
// codec/main.go); this file only moves bytes.
import { connect } from "cloudflare:sockets";
import codecModule from "./codec.wasm";
import { Codec, hex } from "./codec.js";

const MAX_EARLY_DATA = 8192; // as transports/ws's DefaultMaxEarlyData
const MAX_HEADER_WAIT = 16 << 10; // bytes buffered while the header is incomplete
const HIGH_WATER = 1 << 20; // bytes queued towards a side before we stop reading the other

let codecPromise = null;
function getCodec() {
  if (!codecPromise) {
    codecPromise = Codec.load(codecModule).catch((e) => { codecPromise = null; throw e; });
  }
  return codecPromise;
}

export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    if (env.SELFTEST === "1" && url.pathname === "/__portico_selftest" && request.method === "POST") {
      return selftest(request);
    }
    const isWS = (request.headers.get("Upgrade") || "").toLowerCase() === "websocket";
    if (!isWS || url.pathname !== (env.WS_PATH || "/")) return decoy(request, env);
    if ((env.MODE || "direct") === "origin") return toOrigin(request, env);
    return direct(request, env);
  },
};

// decoy answers anything that is not a tunnel: a static page, or the
// response of an upstream site (DECOY=https://…) to the same path.
async function decoy(request, env) {
  const d = env.DECOY || "static";
  if (d === "static") {
    const body = env.DECOY_HTML || "<!doctype html><title>Welcome</title><h1>It works.</h1>\n";
    return new Response(body, { status: 200, headers: { "content-type": "text/html; charset=utf-8" } });
  }
  const up = new URL(d);
  const u = new URL(request.url);
  up.pathname = u.pathname;
  up.search = u.search;
  const h = new Headers(request.headers);
  for (const k of ["upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
    "sec-websocket-protocol", "sec-websocket-extensions", "host"]) h.delete(k);
  return fetch(up.toString(), { method: "GET", headers: h, redirect: "manual" });
}

// earlyData decodes a Sec-WebSocket-Protocol value as transports/ws does:
// base64 in the URL or standard alphabet, padding optional, not empty, at
// most MAX_EARLY_DATA bytes. null when it is not early data.
function earlyData(value) {
  if (!value) return null;
  let s = value.trim().replace(/=+$/, "");
  if (s === "" || s.length > Math.ceil(MAX_EARLY_DATA * 4 / 3)) return null;
  const std = /[+/]/.test(s), url = /[-_]/.test(s);
  if (std && url) return null;
  if (!/^[A-Za-z0-9+/_-]*$/.test(s) || s.length % 4 === 1) return null;
  s = s.replace(/-/g, "+").replace(/_/g, "/");
  let bin;
  try { bin = atob(s + "===".slice((s.length + 3) % 4)); } catch { return null; }
  if (bin.length === 0 || bin.length > MAX_EARLY_DATA) return null;
  const b = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) b[i] = bin.charCodeAt(i);
  return b;
}

function concat(a, b) {
  if (!a || a.length === 0) return b;
  const c = new Uint8Array(a.length + b.length);
  c.set(a);
  c.set(b, a.length);
  return c;
}

function toBytes(data) {
  if (typeof data === "string") return new TextEncoder().encode(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

async function direct(request, env) {
  const codec = await getCodec();
  try {
    codec.setUsers(env.UUIDS || "");
  } catch (e) {
    console.log("edge: " + e.message);
    return decoy(request, env);
  }
  const proto = request.headers.get("Sec-WebSocket-Protocol");
  const early = earlyData(proto);
  let head = null;
  if (early) {
    head = codec.parse(early);
    // A tunnel whose header came with the upgrade is judged before the 101:
    // a wrong UUID or a non-VLESS header gets the decoy, as any HTTP request.
    if (head.status === "user" || head.status === "bad") return decoy(request, env);
  }
  const pair = new WebSocketPair();
  const [client, server] = Object.values(pair);
  server.accept();
  // With recent compatibility dates (flag websocket_standard_binary_type)
  // binary messages default to Blob, as in browsers; ask for ArrayBuffers.
  server.binaryType = "arraybuffer";
  new Session(server, codec, early || new Uint8Array(0)).start();
  const headers = early ? { "Sec-WebSocket-Protocol": proto } : {};
  return new Response(null, { status: 101, webSocket: client, headers });
}

// Session is one tunnel: WebSocket <-> VLESS <-> TCP.
class Session {
  constructor(ws, codec, pending) {
    this.ws = ws;
    this.codec = codec;
    this.pending = pending; // bytes before the header is whole, then the unwritten payload
    this.socket = null;
    this.writer = null;
    this.queued = 0; // client->target bytes accepted from the WebSocket, not yet written
    this.writing = Promise.resolve();
    this.closed = false;
  }

  start() {
    this.ws.addEventListener("message", (ev) => this.onMessage(toBytes(ev.data)));
    this.ws.addEventListener("close", () => this.clientEnded());
    this.ws.addEventListener("error", () => this.abort());
    if (this.pending.length > 0) this.tryHeader();
  }

  onMessage(b) {
    if (this.closed) return;
    if (!this.writer) {
      this.pending = concat(this.pending, b);
      this.tryHeader();
      return;
    }
    this.toTarget(b);
  }

  tryHeader() {
    if (this.socket) return;
    const r = this.codec.parse(this.pending);
    if (r.status === "more") {
      if (this.pending.length > MAX_HEADER_WAIT) this.abort();
      return;
    }
    if (r.status !== "ok") {
      // After the 101 there is no decoy to give: close without a byte.
      console.log("edge: refused tunnel: " + (r.error || "unknown user"));
      this.abort();
      return;
    }
    if (r.command !== 1 || r.flow !== "") {
      // As vlessserver: no UDP or Mux here (no UDP at the edge), no flow.
      console.log("edge: refused tunnel: command " + r.command + (r.flow ? ", flow " + r.flow : "") + " (only plain TCP at the edge)");
      this.abort();
      return;
    }
    const payload = this.pending.subarray(r.length);
    this.pending = null;
    const hostname = r.host.includes(":") ? "[" + r.host + "]" : r.host;
    try {
      this.socket = connect({ hostname, port: r.port }, { allowHalfOpen: true });
    } catch (e) {
      console.log("edge: connect " + r.host + ":" + r.port + ": " + e.message);
      this.abort();
      return;
    }
    this.writer = this.socket.writable.getWriter();
    this.socket.closed.catch(() => {});
    if (payload.length > 0) this.toTarget(payload.slice());
    this.fromTarget(this.codec.response());
  }

  // toTarget writes in order; the WebSocket API has no way to stop
  // delivering messages, so the queue is bounded by closing the tunnel.
  toTarget(b) {
    this.queued += b.length;
    if (this.queued > 64 * HIGH_WATER) {
      console.log("edge: client outran the target by " + this.queued + " bytes; closing");
      this.abort();
      return;
    }
    this.writing = this.writing.then(() => this.writer.write(b)).then(
      () => { this.queued -= b.length; },
      () => this.abort(),
    );
  }

  // fromTarget reads the target and sends each chunk as one binary message,
  // the response header in front of the first (one message, as V2Ray
  // writes it). It reads only while the WebSocket's send queue is short.
  async fromTarget(header) {
    const reader = this.socket.readable.getReader();
    let first = header;
    try {
      for (;;) {
        while (this.ws.bufferedAmount > HIGH_WATER && !this.closed) {
          await new Promise((r) => setTimeout(r, 5));
        }
        const { value, done } = await reader.read();
        if (done || this.closed) break;
        if (first) {
          this.ws.send(concat(first, value));
          first = null;
        } else {
          this.ws.send(value);
        }
      }
      if (first && !this.closed) this.ws.send(first); // target closed before writing: header alone
      if (!this.closed) {
        this.closed = true;
        this.ws.close(1000, "");
      }
    } catch (e) {
      this.abort();
    }
  }

  // clientEnded: the client closed its side; finish writing, then end the
  // target's write side (the target's answer still flows back until it ends).
  clientEnded() {
    if (!this.writer) {
      this.abort();
      return;
    }
    this.writing = this.writing.then(() => this.writer.close()).catch(() => {});
  }

  abort() {
    if (this.closed) return;
    this.closed = true;
    try { this.ws.close(1011, ""); } catch {}
    if (this.socket) this.socket.close().catch(() => {});
  }
}

// toOrigin relays the WebSocket unchanged to ORIGIN, a Portico gateway's
// WebSocket route: the upgrade (early data included) is passed on, and the
// two WebSockets are joined message for message.
async function toOrigin(request, env) {
  if (!env.ORIGIN) return decoy(request, env);
  const target = new URL(env.ORIGIN.replace(/^ws/, "http"));
  const headers = new Headers();
  headers.set("Upgrade", "websocket");
  const proto = request.headers.get("Sec-WebSocket-Protocol");
  if (proto) headers.set("Sec-WebSocket-Protocol", proto);
  let resp;
  try {
    resp = await fetch(target.toString(), { headers });
  } catch (e) {
    console.log("edge: origin: " + e.message);
    return new Response("bad gateway\n", { status: 502 });
  }
  const up = resp.webSocket;
  if (!up) return decoy(request, env);
  up.accept();
  up.binaryType = "arraybuffer";
  const [client, server] = Object.values(new WebSocketPair());
  server.accept();
  server.binaryType = "arraybuffer";
  const join = (from, to) => {
    from.addEventListener("message", (ev) => { try { to.send(ev.data); } catch {} });
    from.addEventListener("close", (ev) => { try { to.close(ev.code === 1005 ? 1000 : ev.code, ev.reason); } catch {} });
    from.addEventListener("error", () => { try { to.close(1011, ""); } catch {} });
  };
  join(server, up);
  join(up, server);
  const echo = resp.headers.get("Sec-WebSocket-Protocol");
  return new Response(null, { status: 101, webSocket: client, headers: echo ? { "Sec-WebSocket-Protocol": echo } : {} });
}

// selftest runs codec vectors posted as JSON,
//   {users: "uuid,…", cases: [{name, hex, want: {status, length?, command?, host?, port?, kind?, id?, flow?, error?}}]}
// through the WebAssembly codec and answers {pass, failed: [...], count}.
async function selftest(request) {
  const body = await request.json();
  const codec = await Codec.load(codecModule);
  const failed = [];
  try {
    codec.setUsers(body.users);
  } catch (e) {
    return Response.json({ pass: false, failed: [{ name: "users", error: e.message }], count: 0 });
  }
  for (const c of body.cases) {
    const b = new Uint8Array(c.hex.length / 2);
    for (let i = 0; i < b.length; i++) b[i] = parseInt(c.hex.substr(2 * i, 2), 16);
    const got = codec.parse(b);
    for (const [k, v] of Object.entries(c.want)) {
      if (got[k] !== v) {
        failed.push({ name: c.name, field: k, want: v, got: got[k] });
        break;
      }
    }
  }
  const resp = hex(codec.response());
  if (body.response !== undefined && resp !== body.response) failed.push({ name: "response", want: body.response, got: resp });
  return Response.json({ pass: failed.length === 0, failed, count: body.cases.length });
}
