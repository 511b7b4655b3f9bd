// The console's only way to the server: the public JSON API with the user's key as a bearer
// token. The key lives in sessionStorage (gone with the tab) and never in a URL.

const KEY = "embedgate.key";

export class ApiError extends Error {
  constructor(status, message, type) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

let rejected = null; // called when the key stops being accepted (revoked, expired)

export const session = {
  key: () => sessionStorage.getItem(KEY),
  signIn: (key) => sessionStorage.setItem(KEY, key),
  signOut: () => sessionStorage.removeItem(KEY),
  whenRejected: (handler) => { rejected = handler; },
};

function fail(status, data, fallback) {
  const error = new ApiError(status, data?.error?.message || fallback || `HTTP ${status}`, data?.error?.type);
  if (status === 401 && session.key() && rejected) rejected(error);
  return error;
}

export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${session.key() || ""}` };
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, cache: "no-store", credentials: "omit" });
  } catch (error) {
    throw new ApiError(0, `network error: ${error.message}`, "network");
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) throw fail(response.status, data, response.statusText);
  return data;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body ?? {});
export const del = (path) => api("DELETE", path);
export const enc = encodeURIComponent;

// multipart upload with progress (fetch has no upload progress; XMLHttpRequest does)
export function upload(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("Authorization", `Bearer ${session.key() || ""}`);
    xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); });
    xhr.addEventListener("load", () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch { data = null; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(fail(xhr.status, data, xhr.statusText));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network error", "network")));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}
