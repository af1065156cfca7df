// The smallest relay: a WebSocket upgrade joined to a TCP connection made
// with connect() to 127.0.0.1:ECHO_PORT. TestWorkerdRelay proves with it
// that workerd's WebSocketPair and cloudflare:sockets work as edge.md says.
import { connect } from "cloudflare:sockets";
export default {
  async fetch(req, env) {
    if (req.headers.get("Upgrade") !== "websocket") return new Response("not a websocket\n");
    const [client, server] = Object.values(new WebSocketPair());
    server.accept();
    server.binaryType = "arraybuffer"; // the default is "blob" with websocket_standard_binary_type
    const sock = connect({ hostname: "127.0.0.1", port: Number(env.ECHO_PORT) });
    const w = sock.writable.getWriter();
    let chain = Promise.resolve();
    server.addEventListener("message", (ev) => { chain = chain.then(() => w.write(new Uint8Array(ev.data))); });
    server.addEventListener("close", () => { chain.then(() => w.close()).catch(() => {}); });
    (async () => {
      const r = sock.readable.getReader();
      for (;;) {
        const { value, done } = await r.read();
        if (done) break;
        server.send(value);
      }
      server.close(1000, "eof");
    })().catch(() => server.close(1011, ""));
    return new Response(null, { status: 101, webSocket: client });
  },
};
