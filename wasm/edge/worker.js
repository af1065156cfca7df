// Portico's edge worker: a Workers-style module (Cloudflare Workers,
// workerd) that accepts VLESS- and VMess-over-WebSocket tunnels at the edge.
//
// Environment (vars or secrets):
//   UUIDS     comma-separated user UUIDs (direct mode; VLESS, and VMess
//             unless VMESS_UUIDS is set)
//   WS_PATH   the VLESS tunnel path, default "/"
//   VMESS_PATH direct mode: the VMess (AEAD, alterId 0) tunnel path; unset
//             means no VMess. Must differ from WS_PATH.
//   VMESS_UUIDS optional: VMess users instead of UUIDS
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
// codec/main.go); VMess's header and chunk crypto likewise
// (protocols/vmess, codec/vmess.go); this file only moves bytes.
//
// VLESS UDP (command 2) to port 53 is carried as DNS over TCP: VLESS v0's
// UDP framing (2-byte big-endian length, datagram) is byte for byte the
// DNS-over-TCP framing of RFC 7766 section 8, so the tunnel is relayed
// unchanged to a TCP connection to the same host, port 53.
import { connect } from "cloudflare:sockets";
import codecModule from "./codec.wasm";
import { Codec, hex } from "./codec.js";

const MAX_EARLY_DATA = 8192; // as transports/ws's DefaultMaxEarlyData
const MAX_HEADER_WAIT = 16 << 10; // bytes buffered while the header is incomplete
const HIGH_WATER = 1 << 20; // bytes queued towards a side before we stop reading the other
const MAX_QUEUED = 64 << 20; // client->target bytes queued before the tunnel is closed
const WRITE_BATCH = 4 << 20; // client->target: queued messages joined into one socket write, up to this
const READ_SIZE = 512 << 10; // target->client: the buffer of one socket read; a message is at most this (plus the VLESS response header or VMess chunk overhead)

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
    if (!isWS) return decoy(request, env);
    const origin = (env.MODE || "direct") === "origin";
    if (url.pathname === (env.WS_PATH || "/")) return origin ? toOrigin(request, env) : direct(request, env, "vless");
    if (!origin && env.VMESS_PATH && url.pathname === env.VMESS_PATH) return direct(request, env, "vmess");
    return decoy(request, env);
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

function joinAll(parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const b = new Uint8Array(n);
  let i = 0;
  for (const p of parts) { b.set(p, i); i += p.length; }
  return b;
}

function toBytes(data) {
  if (typeof data === "string") return new TextEncoder().encode(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

// parseHeader asks the codec about the start of a tunnel: codec.parse for
// VLESS, codec.vmessOpen (with the clock, for the AuthID's window) for
// VMess. A VMess "ok" has opened a session and recorded the AuthID, so a
// header is parsed once.
function parseHeader(codec, kind, bytes) {
  return kind === "vmess" ? codec.vmessOpen(bytes, Math.floor(Date.now() / 1000)) : codec.parse(bytes);
}

async function direct(request, env, kind) {
  const codec = await getCodec();
  try {
    codec.setUsers(env.UUIDS || "", env.VMESS_UUIDS || "");
  } catch (e) {
    console.log("edge: " + e.message);
    return decoy(request, env);
  }
  const proto = request.headers.get("Sec-WebSocket-Protocol");
  const early = earlyData(proto);
  let head = null;
  if (early) {
    head = parseHeader(codec, kind, early);
    // A tunnel whose header came with the upgrade is judged before the 101:
    // a wrong UUID or a bad header gets the decoy, as any HTTP request.
    if (head.status === "bad") console.log("edge: refused " + kind + " tunnel: " + head.error);
    if (head.status === "user" || head.status === "bad") return decoy(request, env);
    if (head.status !== "ok") head = null;
  }
  const pair = new WebSocketPair();
  const [client, server] = Object.values(pair);
  server.accept();
  // With recent compatibility dates (flag websocket_standard_binary_type)
  // binary messages default to Blob, as in browsers; ask for ArrayBuffers.
  server.binaryType = "arraybuffer";
  new Session(server, codec, kind, early || new Uint8Array(0), head).start();
  const headers = early ? { "Sec-WebSocket-Protocol": proto } : {};
  return new Response(null, { status: 101, webSocket: client, headers });
}

// Session is one tunnel: WebSocket <-> VLESS or VMess <-> TCP.
class Session {
  constructor(ws, codec, kind, pending, head) {
    this.ws = ws;
    this.codec = codec;
    this.kind = kind; // "vless" or "vmess"
    this.head = head; // the header's parse result when early data held it
    this.vm = null; // VMess: the codec's session (chunk opener and sealer)
    this.pending = pending; // bytes before the header is whole, then the unwritten payload
    this.targetEnded = false; // the target's write side is closed (or closing)
    this.socket = null;
    this.writer = null;
    this.queued = 0; // client->target bytes accepted from the WebSocket, not yet written
    this.outq = []; // their chunks, in order, from outHead on
    this.outHead = 0;
    this.pumping = false; // pump() is running
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
    this.fromClient(b);
  }

  // fromClient passes the client's bytes on: as they are for VLESS, through
  // the codec's chunk opener for VMess (an end chunk ends the target's
  // write side; a chunk that fails authentication closes the tunnel).
  fromClient(b) {
    if (!this.vm) {
      this.toTarget(b);
      return;
    }
    let r;
    try {
      r = this.vm.open(b);
    } catch (e) {
      console.log("edge: vmess: " + e.message);
      this.abort();
      return;
    }
    if (r.payload.length > 0) this.toTarget(r.payload);
    if (r.eof) this.endTarget();
  }

  tryHeader() {
    if (this.socket) return;
    const r = this.head || parseHeader(this.codec, this.kind, this.pending);
    this.head = null;
    if (r.status === "more") {
      if (this.pending.length > MAX_HEADER_WAIT) this.abort();
      return;
    }
    if (r.status !== "ok") {
      // After the 101 there is no decoy to give: close without a byte.
      console.log("edge: refused " + this.kind + " tunnel: " + (r.error || "unknown user"));
      this.abort();
      return;
    }
    if (this.kind === "vmess") this.vm = r.session;
    // TCP (command 1) only, without a flow, as vlessserver; and VLESS UDP to
    // port 53 as DNS over TCP (same framing). No other UDP at the edge, no
    // Mux; no VMess UDP.
    const dns = this.kind === "vless" && r.command === 2 && r.port === 53;
    if ((r.command !== 1 && !dns) || (r.flow || "") !== "") {
      console.log("edge: refused " + this.kind + " tunnel: command " + r.command + " to port " + r.port +
        (r.flow ? ", flow " + r.flow : "") + " (only plain TCP, and UDP to port 53 as DNS over TCP, at the edge)");
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
    if (payload.length > 0) this.fromClient(payload.slice());
    this.fromTarget(this.vm ? null : this.codec.response());
  }

  // toTarget queues the client's bytes for the target. The WebSocket API
  // has no way to stop delivering messages, so the writes must keep up:
  // pump() writes everything queued since its last write as one socket
  // write (up to WRITE_BATCH). The queue is still bounded, by closing the
  // tunnel.
  toTarget(b) {
    this.queued += b.length;
    if (this.queued > MAX_QUEUED) {
      console.log("edge: client outran the target by " + this.queued + " bytes; closing");
      this.abort();
      return;
    }
    this.outq.push(b);
    if (!this.pumping) this.pump();
  }

  // pump writes the queue to the target, one write at a time, each write
  // joining the chunks queued meanwhile; then, once the client has ended,
  // closes the target's write side.
  async pump() {
    this.pumping = true;
    try {
      while (!this.closed) {
        const q = this.outq;
        if (this.outHead === q.length) {
          this.outq = [];
          this.outHead = 0;
          if (this.targetEnded) await this.writer.close();
          break;
        }
        let b = q[this.outHead];
        q[this.outHead++] = null;
        if (b.length < WRITE_BATCH && this.outHead < q.length) {
          let n = b.length, k = this.outHead;
          while (k < q.length && n + q[k].length <= WRITE_BATCH) n += q[k++].length;
          if (k > this.outHead) {
            const j = new Uint8Array(n);
            j.set(b);
            let o = b.length;
            for (; this.outHead < k; this.outHead++) {
              j.set(q[this.outHead], o);
              o += q[this.outHead].length;
              q[this.outHead] = null;
            }
            b = j;
          }
        }
        if (this.outHead > 1024 && this.outHead * 2 > q.length) {
          this.outq = q.slice(this.outHead);
          this.outHead = 0;
        }
        await this.writer.write(b);
        this.queued -= b.length;
      }
    } catch {
      this.abort();
    } finally {
      this.pumping = false;
    }
  }

  // fromTarget reads the target into buffers of READ_SIZE (a BYOB reader:
  // a default reader gets at most 4 KiB per read) and sends each read as
  // one binary message, the response header in front of the first (one
  // message, as V2Ray writes it). It reads only while the WebSocket's send
  // queue is short.
  async fromTarget(header) {
    const reader = this.socket.readable.getReader({ mode: "byob" });
    let first = header;
    try {
      for (;;) {
        while (this.ws.bufferedAmount > HIGH_WATER && !this.closed) {
          await new Promise((r) => setTimeout(r, 1));
        }
        const { value, done } = await reader.read(new Uint8Array(READ_SIZE));
        if (done || this.closed) break;
        if (value.length === 0) continue;
        if (this.vm) {
          const m = this.vm.seal(value);
          this.ws.send(m.length === 1 ? m[0] : joinAll(m));
        } else if (first) {
          this.ws.send(concat(first, value));
          first = null;
        } else {
          this.ws.send(value);
        }
      }
      if (this.vm && !this.closed) this.ws.send(this.vm.sealEnd()); // the header too, if no byte went
      if (first && !this.closed) this.ws.send(first); // target closed before writing: header alone
      if (!this.closed) {
        this.closed = true;
        this.ws.close(1000, "");
      }
      this.freeCodecSession();
    } catch (e) {
      if (!this.closed) console.log("edge: " + this.kind + " relay: " + e.message);
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
    this.endTarget();
  }

  // endTarget closes the target's write side after the queued writes.
  endTarget() {
    if (this.targetEnded) return;
    this.targetEnded = true;
    if (!this.pumping) this.pump();
  }

  freeCodecSession() {
    if (this.vm) this.vm.close();
  }

  abort() {
    this.freeCodecSession();
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
  // A garbage collection inside the Worker (the runtime sleeps through
  // poll_oneoff while it collects; codec.js does that in virtual time).
  for (let i = 0; i < 3; i++) {
    try { codec.x.edge_gc(); } catch (e) { failed.push({ name: "gc", error: String(e) }); break; }
  }
  const resp = hex(codec.response());
  if (body.response !== undefined && resp !== body.response) failed.push({ name: "response", want: body.response, got: resp });
  return Response.json({ pass: failed.length === 0, failed, count: body.cases.length });
}
