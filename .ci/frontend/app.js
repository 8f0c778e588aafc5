// What a browser frontend does with the gateway, holding only a user's JWT, from another origin
// (so every request with `Authorization` is CORS-preflighted). Each check records what the page
// saw; #results gets them as JSON and `data-done` when all have run (the driver polls for it).
"use strict";

const results = [];
let downloadCheck = null;

function record(name, ok, saw) {
  results.push({ name, ok: Boolean(ok), saw });
}

/** Runs one check; a rejected fetch (a CORS refusal is a TypeError) is a failed check. */
async function check(name, body) {
  try {
    await body();
  } catch (e) {
    record(name, false, `threw ${e && e.name}: ${e && e.message}`);
  }
}

async function sha256Hex(buffer) {
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function run() {
  const cfg = window.FRONTEND_CONFIG;
  const auth = { Authorization: `Bearer ${cfg.userToken}` };
  const statements = `${cfg.gateway}/v1/clients/${cfg.client}/statements`;
  // The HTTP cache stays out of it: every answer the checks see is the gateway's.
  const get = (url, headers = {}) => fetch(url, { headers: { ...auth, ...headers }, cache: "no-store" });
  let listed = null;
  let etag = null;

  await check("store: POST /v1/statements for the user's own client (preflighted)", async () => {
    const r = await fetch(`${cfg.gateway}/v1/statements`, {
      method: "POST",
      headers: { ...auth, "Content-Type": "application/json" },
      body: JSON.stringify({ client_id: cfg.client }),
      cache: "no-store",
    });
    const body = await r.json();
    record("store: POST /v1/statements for the user's own client (preflighted)",
      r.status === 200 && body.summary && body.summary.stored >= 1,
      `HTTP ${r.status}, summary ${JSON.stringify(body.summary)}`);
  });

  await check("list: GET …/statements", async () => {
    const r = await get(statements);
    const body = await r.json();
    listed = (body.statements || [])[0] || null;
    record("list: GET …/statements", r.status === 200 && listed !== null,
      `HTTP ${r.status}, ${(body.statements || []).length} statements`);
  });
  if (listed === null) {
    return;
  }
  const content = `${statements}/${listed.statement_id}/content`;

  await check("content: the SHA-256 computed in the page equals the listed one", async () => {
    const r = await get(content);
    const bytes = await r.arrayBuffer();
    const hex = await sha256Hex(bytes);
    etag = r.headers.get("ETag");
    record("content: the SHA-256 computed in the page equals the listed one",
      r.status === 200 && hex === listed.sha256 && bytes.byteLength === listed.size_bytes && etag,
      `HTTP ${r.status}, ${bytes.byteLength} bytes, sha256 ${hex.slice(0, 16)}… (listed ${String(listed.sha256).slice(0, 16)}…), ETag ${etag ? "exposed" : "NOT exposed"}`);
  });

  await check("range: Range bytes=0-4 → 206 with %PDF-", async () => {
    const r = await get(content, { Range: "bytes=0-4" });
    const text = await r.text();
    const range = r.headers.get("Content-Range");
    record("range: Range bytes=0-4 → 206 with %PDF-",
      r.status === 206 && text === "%PDF-" && range === `bytes 0-4/${listed.size_bytes}`,
      `HTTP ${r.status}, body ${JSON.stringify(text)}, Content-Range ${range}`);
  });

  await check("not modified: If-None-Match with the ETag → 304", async () => {
    const r = await get(content, { "If-None-Match": etag || '"none"' });
    record("not modified: If-None-Match with the ETag → 304", etag && r.status === 304, `HTTP ${r.status}`);
  });

  await check("download URL: GET …/download-url", async () => {
    const r = await get(`${statements}/${listed.statement_id}/download-url`);
    const body = await r.json();
    const url = typeof body.url === "string" ? body.url : "";
    // The URL is a bearer credential: the page reports its shape, never the URL itself.
    record("download URL: GET …/download-url",
      r.status === 200 && /^https?:\/\//.test(url) && url.includes("X-Amz-Signature=") && body.expires_at,
      `HTTP ${r.status}, a pre-signed URL (${url.length} chars), expires_at ${body.expires_at}`);
    downloadCheck = { url, sha256: listed.sha256 };
  });

  await check("refused: another customer's statements → 403", async () => {
    const r = await get(`${cfg.gateway}/v1/clients/${cfg.otherClient}/statements`);
    const body = await r.json();
    record("refused: another customer's statements → 403", r.status === 403 && body.code === "forbidden",
      `HTTP ${r.status}, code ${body.code}`);
  });

  await check("refused: a purge by a user → 403", async () => {
    const r = await fetch(statements, { method: "DELETE", headers: auth, cache: "no-store" });
    const text = await r.text();
    const code = r.headers.get("Content-Type") === "application/problem+json" ? JSON.parse(text).code : null;
    // A public listener without delete routes answers 404 or 405; the internal one 403.
    const refused = r.status === 403 || (cfg.publicListener && (r.status === 404 || r.status === 405));
    record("refused: a purge by a user → 403", refused, `HTTP ${r.status}, code ${code}`);
  });

  if (cfg.serviceToken) {
    await check("refused: a service token on the public listener → 401", async () => {
      const r = await fetch(statements, {
        headers: { Authorization: `Bearer ${cfg.serviceToken}` },
        cache: "no-store",
      });
      record("refused: a service token on the public listener → 401", r.status === 401, `HTTP ${r.status}`);
    });
  }
}

run()
  .catch((e) => record("the page's script", false, `threw ${e && e.name}: ${e && e.message}`))
  .finally(() => {
    const out = document.getElementById("results");
    window.downloadCheck = downloadCheck;
    out.textContent = JSON.stringify(results, null, 2);
    out.dataset.done = "1";
  });
