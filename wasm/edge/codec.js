// The JavaScript side of wasm/edge/codec: instantiates the GOOS=wasip1
// reactor with the few WASI imports the Go runtime calls, and wraps its
// exports (see codec/main.go for the buffer layout).
//
// Nothing here knows VLESS or VMess: parsing, the response headers and
// VMess's chunk crypto are Go's protocols/vless and protocols/vmess,
// compiled to WebAssembly.

const ENOSYS = 52;
const EBADF = 8;

// wasiImports supplies wasi_snapshot_preview1 over one memory: no
// arguments, no environment, no files (stdout and stderr go to the console),
// the clock from Date.now and randomness from crypto.getRandomValues.
//
// poll_oneoff: the Go scheduler polls (timeout 0) and, with a timer
// pending, sleeps through it, notably while the garbage collector runs
// inside an export call. A Worker cannot block, and its clock does not move
// while JavaScript runs, so a sleep is done in virtual time: the monotonic
// clock jumps by the timeout and the subscription fires at once. Without
// this the first garbage collection is a fatal "poll_oneoff failed" (the
// VLESS parser allocates too little to reach it in tests; VMess reaches it
// within a hundred tunnels).
function wasiImports(getMemory) {
  const view = () => new DataView(getMemory().buffer);
  let monoSkew = 0n; // nanoseconds slept in virtual time
  let lastMono = 0n;
  const mono = () => {
    let t = BigInt(Date.now()) * 1000000n + monoSkew;
    if (t < lastMono) t = lastMono;
    lastMono = t;
    return t;
  };
  const zero2 = (a, b) => { const v = view(); v.setUint32(a, 0, true); v.setUint32(b, 0, true); return 0; };
  const dec = new TextDecoder();
  return {
    args_sizes_get: zero2,
    environ_sizes_get: zero2,
    args_get: () => 0,
    environ_get: () => 0,
    clock_time_get(id, precision, out) {
      view().setBigUint64(out, id === 1 ? mono() : BigInt(Date.now()) * 1000000n, true);
      return 0;
    },
    // Subscriptions are 48 bytes (userdata u64, tag u8 at 8; a clock's id
    // u32 at 16, timeout u64 at 24, flags u16 at 40, bit 0 absolute);
    // events 32 bytes (userdata u64, error u16 at 8, type u8 at 10).
    poll_oneoff(subs, events, n, nevents) {
      const v = view();
      let m = 0;
      for (let i = 0; i < n; i++) {
        const s = subs + 48 * i;
        const tag = v.getUint8(s + 8);
        if (tag !== 0) continue; // fd_read/fd_write: there are no files
        const timeout = v.getBigUint64(s + 24, true);
        const abs = (v.getUint16(s + 40, true) & 1) === 1;
        const now = mono();
        const until = abs ? timeout : now + timeout;
        if (until > now) monoSkew += until - now;
        const e = events + 32 * m++;
        v.setBigUint64(e, v.getBigUint64(s, true), true);
        v.setUint16(e + 8, 0, true);
        v.setUint8(e + 10, 0);
      }
      v.setUint32(nevents, m, true);
      return m > 0 ? 0 : ENOSYS;
    },
    random_get(ptr, len) {
      const mem = new Uint8Array(getMemory().buffer, ptr, len);
      for (let i = 0; i < len; i += 65536) crypto.getRandomValues(mem.subarray(i, Math.min(len, i + 65536)));
      return 0;
    },
    fd_write(fd, iovs, n, written) {
      const v = view();
      let total = 0, text = "";
      for (let i = 0; i < n; i++) {
        const p = v.getUint32(iovs + 8 * i, true), l = v.getUint32(iovs + 8 * i + 4, true);
        text += dec.decode(new Uint8Array(getMemory().buffer, p, l));
        total += l;
      }
      if (fd === 1 || fd === 2) console.log("codec: " + text.trimEnd());
      v.setUint32(written, total, true);
      return 0;
    },
    proc_exit(code) { throw new Error("codec: exit " + code); },
    sched_yield: () => 0,
    fd_close: () => EBADF,
    fd_read: () => EBADF,
    fd_fdstat_get: () => EBADF,
    fd_fdstat_set_flags: () => EBADF,
    fd_prestat_get: () => EBADF,
    fd_prestat_dir_name: () => EBADF,
    path_open: () => ENOSYS,
    path_filestat_get: () => ENOSYS,
  };
}

const enc = new TextEncoder();
const dec = new TextDecoder();

// Codec is one instance of the reactor.
export class Codec {
  static async load(module) {
    let memory;
    const instance = await WebAssembly.instantiate(module, {
      wasi_snapshot_preview1: wasiImports(() => memory),
    });
    memory = instance.exports.memory;
    instance.exports._initialize();
    return new Codec(instance);
  }

  constructor(instance) {
    this.x = instance.exports;
    this.inPtr = this.x.edge_in();
    this.outPtr = this.x.edge_out();
    this.inSize = 16 << 10;
    this.usersKey = null;
    this.dataPtr = this.x.edge_data();
    this.doutPtr = this.x.edge_dout();
    this.dataSize = 64 << 10; // DataSize in codec/vmess.go
  }

  input(bytes) {
    const n = Math.min(bytes.length, this.inSize);
    new Uint8Array(this.x.memory.buffer, this.inPtr, n).set(bytes.subarray(0, n));
    return n;
  }

  out(n) { return new Uint8Array(this.x.memory.buffer, this.outPtr, n); }

  error() {
    const o = this.out(2);
    const n = (o[0] << 8) | o[1];
    return dec.decode(this.out(2 + n).slice(2));
  }

  // setUsers loads a comma-separated UUID list, once per distinct list,
  // for VLESS and VMess; vmessList, when set, replaces VMess's.
  setUsers(list, vmessList) {
    const key = (list || "") + "\n" + (vmessList || "");
    if (key === this.usersKey) return;
    const r = this.x.edge_users(this.input(enc.encode(list || "")));
    if (r < 0) throw new Error(this.error());
    if (vmessList) {
      const v = this.x.edge_vmess_users(this.input(enc.encode(vmessList)));
      if (v < 0) throw new Error(this.error());
    }
    this.usersKey = key;
    this.userCount = r;
  }

  // parse looks at the start of a VLESS v0 request:
  //   {status: "ok", length, command, user, id, host, port, kind, flow}
  //   {status: "more"}            a valid prefix, more bytes needed
  //   {status: "user"}            version 0, but the UUID is no user's
  //   {status: "bad", error}      not a VLESS v0 request
  parse(bytes) {
    const r = this.x.edge_parse(this.input(bytes));
    if (r === 0) return bytes.length >= this.inSize ? { status: "bad", error: "edge: header too long" } : { status: "more" };
    if (r === -1) return { status: "user" };
    if (r < 0) return { status: "bad", error: this.error() };
    const o = this.out(1024);
    let i = 0;
    const command = o[i++];
    const user = (o[i] << 8) | o[i + 1]; i += 2;
    const id = hex(o.subarray(i, i + 16)); i += 16;
    const port = (o[i] << 8) | o[i + 1]; i += 2;
    const kind = ["none", "ip", "domain"][o[i++]];
    const hl = o[i++];
    const host = dec.decode(o.subarray(i, i + hl)); i += hl;
    const fl = o[i++];
    const flow = dec.decode(o.subarray(i, i + fl));
    return { status: "ok", length: r, command, user, id, host, port, kind, flow };
  }

  // vmessOpen looks at the start of a VMessAEAD request, with the clock
  // (Unix seconds) for the AuthID's window:
  //   {status: "ok", length, session, command, security, options, user, host, port, kind}
  //   {status: "more"}           more bytes needed
  //   {status: "user"}           the first 16 bytes are no user's AuthID
  //   {status: "bad", error}     skew, replay, a header that fails or does not parse
  // "ok" opens a session in the codec: close it with session.close().
  vmessOpen(bytes, now) {
    const r = this.x.edge_vmess_open(this.input(bytes), BigInt(now));
    if (r === 0) return bytes.length >= this.inSize ? { status: "bad", error: "edge: header too long" } : { status: "more" };
    if (r === -1) return { status: "user" };
    if (r < 0) return { status: "bad", error: this.error() };
    const o = this.out(1024);
    let i = 0;
    const sid = ((o[0] << 24) | (o[1] << 16) | (o[2] << 8) | o[3]) >>> 0; i += 4;
    const command = o[i++], security = o[i++], options = o[i++];
    const user = (o[i] << 8) | o[i + 1]; i += 2;
    const port = (o[i] << 8) | o[i + 1]; i += 2;
    const kind = ["none", "ip", "domain"][o[i++]];
    const hl = o[i++];
    const host = dec.decode(o.subarray(i, i + hl));
    return { status: "ok", length: r, session: new VMessSession(this, sid), command, security, options, user, host, port, kind };
  }

  // response is the VLESS v0 response header (00 00), from the Go codec.
  response() {
    const n = this.x.edge_response();
    if (n < 0) throw new Error(this.error());
    return this.out(n).slice();
  }
}

// VMessSession is one VMess tunnel's state inside the codec: its request
// body opener and response body sealer.
export class VMessSession {
  constructor(codec, sid) {
    this.c = codec;
    this.sid = sid;
  }

  // open decodes request body bytes from the client: {payload, eof}.
  // payload is a fresh copy (the codec's buffers are reused); it throws on
  // a chunk that fails authentication.
  open(bytes) {
    const c = this.c;
    const parts = [];
    let eof = false;
    for (let i = 0; i < bytes.length; i += c.dataSize) {
      const piece = bytes.subarray(i, Math.min(bytes.length, i + c.dataSize));
      new Uint8Array(c.x.memory.buffer, c.dataPtr, piece.length).set(piece);
      const r = c.x.edge_vmess_body(this.sid, piece.length);
      if (r < 0) throw new Error(c.error());
      const n = r & 0x3fffffff;
      if (n > 0) parts.push(new Uint8Array(c.x.memory.buffer, c.doutPtr, n).slice());
      if (r & 0x40000000) { eof = true; break; }
    }
    return { payload: parts.length === 1 ? parts[0] : joinAll(parts), eof };
  }

  // seal encodes target bytes as response chunks (the response header in
  // front of the first): an array of fresh copies, one per DataSize piece.
  seal(bytes) {
    const c = this.c;
    const out = [];
    for (let i = 0; i < bytes.length; i += c.dataSize) {
      const piece = bytes.subarray(i, Math.min(bytes.length, i + c.dataSize));
      new Uint8Array(c.x.memory.buffer, c.dataPtr, piece.length).set(piece);
      const n = c.x.edge_vmess_seal(this.sid, piece.length);
      if (n < 0) throw new Error(c.error());
      out.push(new Uint8Array(c.x.memory.buffer, c.doutPtr, n).slice());
    }
    return out;
  }

  // sealEnd is the end-of-stream chunk (after the header if none went).
  sealEnd() {
    const n = this.c.x.edge_vmess_seal_end(this.sid);
    if (n < 0) throw new Error(this.c.error());
    return new Uint8Array(this.c.x.memory.buffer, this.c.doutPtr, n).slice();
  }

  close() {
    if (this.sid) this.c.x.edge_vmess_close(this.sid);
    this.sid = 0;
  }
}

function joinAll(parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const b = new Uint8Array(n);
  let i = 0;
  for (const p of parts) { b.set(p, i); i += p.length; }
  return b;
}

export function hex(b) {
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}
