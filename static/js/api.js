/**
 * The REST API as the pages use it: session cookie plus CSRF token, JSON in and out,
 * and the API's one error shape ({error, detail, fields}).
 */

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  if (match) return decodeURIComponent(match[1]);
  const input = document.querySelector("input[name=csrfmiddlewaretoken]");
  return input ? input.value : "";
}

/** Call the API; resolves to {ok, status, data}. A lost session goes to the login page. */
export async function api(method, path, body) {
  const options = {
    method,
    credentials: "same-origin",
    headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
  };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch {
    return { ok: false, status: 0, data: { error: "network", detail: "The server cannot be reached. Try again." } };
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.status === 401) {
    location.assign(`/login/?next=${encodeURIComponent(location.pathname)}`);
  }
  return { ok: response.ok, status: response.status, data };
}

/** Fetch a server-rendered fragment; null when it no longer exists (404). */
export async function fetchFragment(path) {
  const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "text/html" } });
  if (response.status === 404) return null;
  if (response.redirected && new URL(response.url).pathname.startsWith("/login")) {
    location.assign(`/login/?next=${encodeURIComponent(location.pathname)}`);
    return null;
  }
  if (!response.ok) throw new Error(`GET ${path}: ${response.status}`);
  return response.text();
}
