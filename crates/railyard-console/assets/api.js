// The console's only way to the server: the public routes, with the signed-in token as
// `Authorization: Bearer` (kept in this tab's sessionStorage, never in a URL).

const KEY = "railyard.token";

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  sessionStorage.setItem(KEY, value);
}

export function clearToken() {
  sessionStorage.removeItem(KEY);
}

/** An answer other than 2xx, in words: status, error and what to do. */
export class ApiFailure extends Error {
  constructor(status, body) {
    const words = body && typeof body === "object"
      ? [body.error, body.detail].filter(Boolean).join(": ")
      : String(body || "").slice(0, 300);
    const name = { 400: "bad request", 401: "not signed in", 403: "not allowed", 404: "not found",
      409: "refused by the release's state", 413: "too large", 422: "invalid",
      503: "unavailable" }[status] || "failed";
    super(`${status} ${name}${words ? " — " + words : ""}`);
    this.status = status;
    this.body = body;
  }
}

function headers(extra) {
  const h = new Headers(extra || {});
  const t = token();
  if (t) h.set("Authorization", `Bearer ${t}`);
  return h;
}

/**
 * `fetch` with the token; JSON in (or `text` as `contentType`) and JSON out; throws an
 * ApiFailure on a non-2xx answer.
 */
export async function api(path, { method = "GET", body, text, contentType = "text/plain", raw = false } = {}) {
  const type = text !== undefined ? { "Content-Type": contentType } : body === undefined ? {} : { "Content-Type": "application/json" };
  const init = { method, headers: headers(type), cache: "no-store" };
  if (text !== undefined) init.body = text;
  else if (body !== undefined) init.body = JSON.stringify(body);
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiFailure(0, `cannot reach the server (${error.message}): is railyard running?`);
  }
  if (raw && response.ok) return response;
  const answer = await response.text();
  let parsed = answer;
  try { parsed = answer ? JSON.parse(answer) : null; } catch { /* not JSON: keep the text */ }
  if (!response.ok) throw new ApiFailure(response.status, parsed);
  return parsed;
}

/**
 * Follows a Server-Sent Events route with the token in a header (EventSource cannot send
 * one): reads the body as a stream, hands each event to `onEvent({id, event, data})`, and
 * reconnects after a drop with `Last-Event-ID` = the last id seen, so nothing is missed.
 * Stops when `signal` aborts. `onState` hears "live" and "reconnecting".
 */
export async function follow(path, { after = null, onEvent, onState = () => {}, signal }) {
  let last = after;
  let pause = 250;
  while (!signal.aborted) {
    try {
      const h = headers({ Accept: "text/event-stream" });
      if (last !== null) h.set("Last-Event-ID", String(last));
      const response = await fetch(path, { headers: h, signal, cache: "no-store" });
      if (!response.ok) {
        const text = await response.text();
        let body = text;
        try { body = JSON.parse(text); } catch { /* keep text */ }
        const failure = new ApiFailure(response.status, body);
        if (response.status >= 400 && response.status < 500) throw failure;
        onState("reconnecting", failure.message);
      } else {
        onState("live");
        pause = 250;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        let frame = { id: null, event: "message", data: [] };
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.search(/\r?\n/)) >= 0) {
            const line = buffer.slice(0, cut);
            buffer = buffer.slice(cut + (buffer[cut] === "\r" ? 2 : 1));
            if (line === "") {
              if (frame.data.length) {
                if (frame.id !== null) last = frame.id;
                onEvent({ id: frame.id, event: frame.event, data: frame.data.join("\n") });
              }
              frame = { id: null, event: "message", data: [] };
            } else if (!line.startsWith(":")) {
              const colon = line.indexOf(":");
              const field = colon < 0 ? line : line.slice(0, colon);
              let val = colon < 0 ? "" : line.slice(colon + 1);
              if (val.startsWith(" ")) val = val.slice(1);
              if (field === "id") frame.id = val;
              else if (field === "event") frame.event = val;
              else if (field === "data") frame.data.push(val);
            }
          }
        }
        onState("reconnecting", "the event stream ended");
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiFailure && error.status >= 400 && error.status < 500) {
        onState("failed", error.message);
        return;
      }
      onState("reconnecting", error.message);
    }
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(pause * 2, 5000);
  }
}
