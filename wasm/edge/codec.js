// The JavaScript side of wasm/edge/codec: instantiates the GOOS=wasip1
// reactor with the few WASI imports the Go runtime calls, and wraps its
// exports (see codec/main.go for the buffer layout).
//
// Nothing here knows VLESS: parsing and the response header are Go's
// protocols/vless, compiled to WebAssembly.

const ENOSYS = 52;
const EBADF = 8;

// wasiImports supplies wasi_snapshot_preview1 over one memory: no
// arguments, no environment, no files (stdout and stderr go to the console),
// the clock from Date.now and randomness from crypto.getRandomValues.
function wasiImports(getMemory) {
  const view = () => new DataView(getMemory().buffer);
  const zero2 = (a, b) => { const v = view(); v.setUint32(a, 0, true); v.setUint32(b, 0, true); return 0; };
  const dec = new TextDecoder();
  return {
    args_sizes_get: zero2,
    environ_sizes_get: zero2,
    args_get: () => 0,
    environ_get: () => 0,
    clock_time_get(id, precision, out) {
      view().setBigUint64(out, BigInt(Date.now()) * 1000000n, true);
      return 0;
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
    poll_oneoff: () => ENOSYS,
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

  // setUsers loads a comma-separated UUID list, once per distinct list.
  setUsers(list) {
    if (list === this.usersKey) return;
    const r = this.x.edge_users(this.input(enc.encode(list || "")));
    if (r < 0) throw new Error(this.error());
    this.usersKey = list;
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

  // response is the VLESS v0 response header (00 00), from the Go codec.
  response() {
    const n = this.x.edge_response();
    if (n < 0) throw new Error(this.error());
    return this.out(n).slice();
  }
}

export function hex(b) {
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}
