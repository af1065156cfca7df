// Portico playground: the page's logic over globalThis.portico, the
// GOOS=js build of wasm/js (see docs/wasm.md). No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);

// ---- bytes ---------------------------------------------------------------

function toHex(bytes) {
	return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function fromHex(s) {
	s = s.replace(/[\s:]/g, "");
	if (s.length % 2 !== 0 || /[^0-9a-fA-F]/.test(s)) throw new Error("bad hex: odd length or a non-hex character");
	const out = new Uint8Array(s.length / 2);
	for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
	return out;
}

function concat(...parts) {
	const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
	let off = 0;
	for (const p of parts) { out.set(p, off); off += p.length; }
	return out;
}

// ---- rendering -----------------------------------------------------------

function el(tag, attrs, ...children) {
	const e = document.createElement(tag);
	for (const [k, v] of Object.entries(attrs || {})) {
		if (k === "class") e.className = v;
		else if (k.startsWith("data-")) e.setAttribute(k, v);
		else e[k] = v;
	}
	for (const c of children) e.append(c);
	return e;
}

// renderHex shows bytes as hex, each field of fields ({name, offset, len},
// as decodeRequest/openHeader return them) coloured and labelled; bytes no
// field covers are shown as "rest". The container's data-hex is the whole.
function renderHex(box, bytes, fields) {
	box.replaceChildren();
	box.dataset.hex = toHex(bytes);
	const spans = [];
	let at = 0;
	const sorted = [...(fields || [])].sort((a, b) => a.offset - b.offset);
	for (const f of sorted) {
		if (f.offset > at) spans.push({ name: "?", offset: at, len: f.offset - at, gap: true });
		spans.push(f);
		at = Math.max(at, f.offset + f.len);
	}
	if (at < bytes.length) spans.push({ name: "rest", offset: at, len: bytes.length - at, gap: true });
	spans.forEach((f, i) => {
		const part = bytes.subarray(f.offset, f.offset + f.len);
		const hex = toHex(part);
		const cls = "field " + (f.gap ? "gap" : "c" + (i % 8));
		box.append(el("span", { class: cls, "data-field": f.name, "data-bytes": hex, title: `${f.name}: offset ${f.offset}, ${f.len} bytes` },
			el("span", { class: "label" }, `${f.name} (${f.len})`),
			el("code", {}, hex.replace(/(..)(?!$)/g, "$1 "))));
	});
}

function renderKV(table, obj) {
	table.replaceChildren();
	for (const [k, v] of Object.entries(obj)) {
		if (k === "fields") continue;
		const val = typeof v === "object" && v !== null ? JSON.stringify(v) : String(v);
		table.append(el("tr", { "data-key": k }, el("th", {}, k), el("td", {}, val)));
	}
}

function showError(id, err) {
	$(id).textContent = err ? (err.message || String(err)) : "";
}

// guard runs fn, showing a thrown Error's message (the Go error's) in errId.
function guard(errId, fn) {
	return () => {
		showError(errId, null);
		try { fn(); } catch (e) { showError(errId, e); }
	};
}

function num(id) {
	const v = $(id).value.trim();
	return v === "" ? undefined : Number(v);
}

function str(id) {
	const v = $(id).value.trim();
	return v === "" ? undefined : v;
}

// ---- 1. links ------------------------------------------------------------

function parseLink() {
	$("link-out").replaceChildren();
	renderKV($("link-out"), portico.links.parse($("link-input").value.trim()));
}

// ---- 2. build ------------------------------------------------------------

function syncBuildForm() {
	const p = $("b-proto").value;
	for (const fs of document.querySelectorAll("#build fieldset.opt")) fs.hidden = !fs.classList.contains(p);
}

function buildRequest() {
	const box = $("b-hex"), out = $("b-out");
	box.replaceChildren(); delete box.dataset.hex; out.replaceChildren();
	const p = $("b-proto").value;
	const id = $("b-id").value.trim(), command = $("b-command").value, target = $("b-target").value.trim();
	let bytes, decoded;
	if (p === "vless0" || p === "vless1") {
		const req = { version: p === "vless0" ? 0 : 1, id, command, target };
		if (p === "vless0") {
			if (str("b-flow")) req.flow = str("b-flow");
			if (str("b-seed")) req.seed = str("b-seed");
		} else {
			if ($("b-udpmulti").checked) req.udpMulti = true;
			if ($("b-keepalive").checked) req.keepAlive = true;
			if ($("b-resolve").checked) req.resolve = true;
			if (num("b-padlen") !== undefined) req.padLen = num("b-padlen");
		}
		bytes = portico.vless.encodeRequest(req);
		decoded = portico.vless.decodeRequest(bytes);
	} else {
		const req = { id, command, target, security: $("b-security").value, alterId: num("b-alterid") || 0, authLen: $("b-authlen").checked };
		const opt = { time: num("b-time"), alterIndex: num("b-alterindex"), responseAuth: num("b-respauth"),
			key: str("b-key"), iv: str("b-iv"), authRand: str("b-authrand"), nonce: str("b-nonce") };
		for (const [k, v] of Object.entries(opt)) if (v !== undefined) req[k] = v;
		const pad = $("b-padding").value.trim();
		if (pad !== "") req.padding = pad === "none" ? "" : pad;
		bytes = portico.vmess.sealHeader(req);
		// Open it again for the field spans and the values drawn at random.
		decoded = portico.vmess.openHeader(bytes, id, req.time, req.alterId);
	}
	renderHex(box, bytes, decoded.fields);
	renderKV(out, Object.assign({ bytes: bytes.length }, decoded));
}

// ---- 3. decode -----------------------------------------------------------

function decodeBytes() {
	const box = $("d-hexout"), out = $("d-out");
	box.replaceChildren(); delete box.dataset.hex; out.replaceChildren();
	const bytes = fromHex($("d-hex").value);
	const id = $("d-id").value.trim();
	let decoded;
	if ($("d-proto").value === "vless") {
		decoded = portico.vless.decodeRequest(bytes);
		if (id !== "" && decoded.id.toLowerCase() !== id.toLowerCase()) decoded.note = `uuid ${decoded.id} is not ${id}: a server with that user refuses it`;
	} else {
		decoded = portico.vmess.openHeader(bytes, id, num("d-time"), num("d-alterid") || 0);
	}
	renderHex(box, bytes, decoded.fields);
	renderKV(out, decoded);
}

// ---- 4. anytls -----------------------------------------------------------

function planAnyTLS() {
	const chart = $("a-chart");
	chart.replaceChildren();
	$("a-info").textContent = "";
	const scheme = $("a-scheme").value;
	const info = portico.anytls.parseScheme(scheme);
	const size = num("a-size") || 0, seed = num("a-seed");
	$("a-info").textContent = `scheme md5 ${info.md5}; packets 0..${info.stop - 1} are shaped. Bars: one per TLS record; dark = payload, light = padding (cmdWaste).`;
	const rows = [];
	let max = 1;
	// Packet 0 is the authentication; show one more packet than the scheme shapes.
	for (let p = 0; p <= info.stop && p < 64; p++) {
		const recs = portico.anytls.planWrites(scheme, p, size, seed);
		rows.push({ p, recs });
		max = Math.max(max, recs.reduce((n, r) => n + r.len, 0)); // the widest packet fills the row
	}
	for (const { p, recs } of rows) {
		const bars = el("div", { class: "bars" });
		for (const r of recs) {
			const waste = r.len - r.payload;
			const bar = el("div", { class: "bar", "data-len": String(r.len), title: `${r.len} bytes: ${r.payload} payload + ${waste} padding` },
				el("div", { class: "payload" }), el("div", { class: "waste" }), el("span", {}, String(r.len)));
			bar.style.width = `calc(${(100 * r.len) / max}% - 3px)`;
			bar.firstChild.style.flexGrow = String(r.payload);
			bar.children[1].style.flexGrow = String(waste);
			bars.append(bar);
		}
		if (recs.length === 0) bars.append(el("em", {}, "nothing written"));
		chart.append(el("div", { class: "row", "data-packet": String(p) }, el("div", { class: "pk" }, `packet ${p}`), bars));
	}
}

// ---- 5. live -------------------------------------------------------------

let liveSocket = null;

function step(text, bytes, fields) {
	const li = el("li", {}, el("span", { class: "when" }, new Date().toISOString().slice(11, 23) + " "), text);
	if (bytes) {
		const box = el("div", { class: "hex" });
		renderHex(box, bytes, fields);
		li.append(box);
	}
	$("l-steps").append(li);
}

// parseHTTP returns {head, body, complete} for the bytes of an HTTP/1.1
// response, or null while the head is incomplete.
function parseHTTP(bytes) {
	const text = new TextDecoder("latin1").decode(bytes);
	const end = text.indexOf("\r\n\r\n");
	if (end < 0) return null;
	const head = text.slice(0, end);
	const raw = bytes.subarray(end + 4);
	const cl = /^content-length:\s*(\d+)\s*$/im.exec(head);
	if (/^transfer-encoding:.*chunked/im.test(head)) {
		const parts = [];
		let at = 0;
		const t = new TextDecoder("latin1").decode(raw);
		for (;;) {
			const nl = t.indexOf("\r\n", at);
			if (nl < 0) return { head, body: concat(...parts), complete: false };
			const n = parseInt(t.slice(at, nl), 16);
			if (isNaN(n)) return { head, body: concat(...parts), complete: true };
			if (n === 0) return { head, body: concat(...parts), complete: true };
			if (nl + 2 + n > raw.length) return { head, body: concat(...parts), complete: false };
			parts.push(raw.subarray(nl + 2, nl + 2 + n));
			at = nl + 2 + n + 2;
		}
	}
	if (cl) return { head, body: raw.subarray(0, Number(cl[1])), complete: raw.length >= Number(cl[1]) };
	return { head, body: raw, complete: false }; // until the connection closes
}

function liveFetch() {
	if (liveSocket) { liveSocket.close(); liveSocket = null; }
	const sec = $("live");
	sec.dataset.state = "running";
	$("l-steps").replaceChildren(); $("l-head").textContent = ""; $("l-body").textContent = "";
	const url = $("l-url").value.trim(), id = $("l-id").value.trim(), target = $("l-target").value.trim();
	const path = $("l-path").value.trim() || "/";
	let header, decoded;
	try {
		header = portico.vless.encodeRequest({ version: 0, id, command: "tcp", target });
		decoded = portico.vless.decodeRequest(header);
	} catch (e) {
		step("cannot build the header: " + e.message);
		sec.dataset.state = "error";
		return;
	}
	const host = target.replace(/:(80|443)$/, "");
	const get = new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: portico-playground\r\nAccept: */*\r\nConnection: close\r\n\r\n`);
	let buf = new Uint8Array(0), respHeaderLen = -1, done = false;
	const finish = (state, msg) => {
		if (done) return;
		done = true;
		clearTimeout(timer);
		if (msg) step(msg);
		const http = respHeaderLen >= 0 ? parseHTTP(buf.subarray(respHeaderLen)) : null;
		if (http) {
			$("l-head").textContent = http.head;
			$("l-body").textContent = new TextDecoder().decode(http.body);
		} else if (respHeaderLen >= 0 && buf.length > respHeaderLen) {
			$("l-body").textContent = new TextDecoder().decode(buf.subarray(respHeaderLen));
		}
		sec.dataset.state = state;
		if (ws.readyState <= 1) ws.close();
	};
	step(`connecting to ${url}`);
	let ws;
	try {
		ws = new WebSocket(url);
	} catch (e) {
		step("cannot open the WebSocket: " + e.message);
		sec.dataset.state = "error";
		return;
	}
	liveSocket = ws;
	ws.binaryType = "arraybuffer";
	const timer = setTimeout(() => finish("error", "timed out after 20 s"), 20000);
	ws.onopen = () => {
		step("connected; sending the VLESS v0 header and the HTTP request in one binary message");
		ws.send(concat(header, get));
		step(`VLESS header sent (${header.length} bytes)`, header, decoded.fields);
		step(`HTTP request sent (${get.length} bytes): GET ${path} to ${target}`);
	};
	ws.onmessage = (ev) => {
		buf = concat(buf, new Uint8Array(ev.data));
		if (respHeaderLen < 0) {
			if (buf.length < 2) return;
			if (buf[0] !== 0) return finish("error", `not a VLESS response: version byte ${buf[0]}`);
			if (buf.length < 2 + buf[1]) return;
			respHeaderLen = 2 + buf[1];
			step(`VLESS response header (${respHeaderLen} bytes)`, buf.subarray(0, respHeaderLen),
				[{ name: "version", offset: 0, len: 1 }, { name: "addons length", offset: 1, len: 1 }].concat(buf[1] ? [{ name: "addons", offset: 2, len: buf[1] }] : []));
		}
		const http = parseHTTP(buf.subarray(respHeaderLen));
		if (http && http.complete) finish("done", `response complete: ${http.body.length} body bytes (${buf.length - respHeaderLen} bytes after the VLESS header)`);
	};
	ws.onerror = () => step("WebSocket error (a refused connection, an untrusted certificate, or a wrong path all look alike here)");
	ws.onclose = (ev) => {
		const got = respHeaderLen >= 0 ? buf.length - respHeaderLen : 0;
		if (respHeaderLen >= 0) finish("done", `connection closed (code ${ev.code}) after ${got} bytes of response`);
		else finish("error", `connection closed (code ${ev.code}) before a VLESS response: wrong UUID, path, or target refused`);
	};
}

// ---- start ---------------------------------------------------------------

function ready() {
	$("link-parse").onclick = guard("link-err", parseLink);
	$("b-proto").onchange = syncBuildForm;
	$("b-build").onclick = guard("b-err", buildRequest);
	$("d-decode").onclick = guard("d-err", decodeBytes);
	$("a-plan").onclick = guard("a-err", planAnyTLS);
	$("l-go").onclick = liveFetch;
	syncBuildForm();
	if ($("l-url").value === "") $("l-url").value = `wss://${location.hostname || "127.0.0.1"}:8443/ROUTEKEY/vless-ws`;
	$("status").textContent = "Ready: portico.wasm loaded.";
	$("status").dataset.state = "ready";
	document.body.dataset.ready = "1";
}

(async () => {
	try {
		const go = new Go();
		const { instance } = await WebAssembly.instantiateStreaming(fetch("portico.wasm"), go.importObject);
		go.run(instance); // returns once main blocks, with globalThis.portico set
		ready();
	} catch (e) {
		$("status").textContent = "Could not load portico.wasm: " + e.message;
		$("status").dataset.state = "error";
	}
})();
