// Runs calls through Portico's GOOS=js build under Node, for wasm/js_test.go.
//
//   node run_js.js WASM_EXEC_JS PORTICO_WASM CALLS_JSON
//
// CALLS_JSON is [{fn: "vless.decodeRequest", args: [...], bytes: [i...]}]:
// the positional arguments of portico[group][name], those at the indexes in
// bytes given as hex and passed as a Uint8Array. It prints one JSON array:
// {value} (a Uint8Array as {hex}) or {error, isError} for each call.
"use strict";

const [wasmExec, wasmFile, callsFile] = process.argv.slice(2);
globalThis.require = require;
globalThis.fs = require("fs");
globalThis.TextEncoder = require("util").TextEncoder;
globalThis.TextDecoder = require("util").TextDecoder;
globalThis.performance ??= require("perf_hooks").performance;
globalThis.crypto ??= require("crypto").webcrypto;
require(wasmExec);

const calls = JSON.parse(fs.readFileSync(callsFile, "utf8"));
const go = new Go();
WebAssembly.instantiate(fs.readFileSync(wasmFile), go.importObject).then(({ instance }) => {
	go.run(instance); // returns once main blocks, with globalThis.portico set
	const out = calls.map((c) => {
		const [group, name] = c.fn.split(".");
		const args = c.args.map((a, i) => (c.bytes.includes(i) && typeof a === "string" ? Uint8Array.from(Buffer.from(a, "hex")) : a));
		try {
			const v = globalThis.portico[group][name](...args);
			return { value: v instanceof Uint8Array ? { hex: Buffer.from(v).toString("hex") } : v };
		} catch (e) {
			return { error: e.message, isError: e instanceof Error };
		}
	});
	process.stdout.write(JSON.stringify(out));
	process.exit(0);
}).catch((err) => {
	console.error(err);
	process.exit(1);
});
