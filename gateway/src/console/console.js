// Mobula console: uploads (drag and drop or file picker, a progress bar, multipart above
// 16 MiB), deletes, new directories and buckets, snaplinks, and reloading a running job's page.
// Every write goes to /console/api/<Manta path> with the page's CSRF token.
"use strict";

const MULTIPART_ABOVE = 16 << 20;
const PART = 8 << 20;

function csrf() {
  return document.querySelector('meta[name="csrf"]').content;
}

function api(path) {
  return "/console/api" + path.split("/").map(encodeURIComponent).join("/");
}

function say(text) {
  let p = document.getElementById("message");
  if (!p) {
    p = document.createElement("p");
    p.id = "message";
    document.querySelector("main").prepend(p);
  }
  p.textContent = text;
}

async function call(method, path, body, headers) {
  const r = await fetch(api(path), {
    method,
    body,
    credentials: "same-origin",
    headers: Object.assign({ "x-csrf-token": csrf() }, headers || {}),
  });
  if (!r.ok) {
    throw new Error(r.status + " " + (await r.text()));
  }
  return r;
}

function put(url, blob, headers, progress) {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open("PUT", url);
    x.setRequestHeader("x-csrf-token", csrf());
    for (const [k, v] of Object.entries(headers)) {
      x.setRequestHeader(k, v);
    }
    x.upload.onprogress = (e) => progress(e.loaded);
    x.onload = () =>
      x.status < 300
        ? resolve(x.getResponseHeader("etag"))
        : reject(new Error(x.status + " " + x.responseText));
    x.onerror = () => reject(new Error("the upload was cut off"));
    x.send(blob);
  });
}

async function upload(dir, file, progress) {
  const path = (dir.endsWith("/") ? dir : dir + "/") + file.name;
  const type = file.type || "application/octet-stream";
  if (file.size <= MULTIPART_ABOVE) {
    await put(api(path), file, { "content-type": type }, progress);
    return;
  }
  const account = path.split("/")[1];
  const created = await call(
    "POST",
    "/" + account + "/uploads",
    JSON.stringify({ objectPath: path, headers: { "content-type": type } }),
    { "content-type": "application/json" }
  );
  const u = await created.json();
  const etags = [];
  for (let n = 0, off = 0; off < file.size; n++, off += PART) {
    const part = file.slice(off, Math.min(off + PART, file.size));
    const base = off;
    etags.push(await put(api(u.partsDirectory + "/" + n), part, {}, (k) => progress(base + k)));
  }
  await call("POST", u.partsDirectory + "/commit", JSON.stringify({ parts: etags }), {
    "content-type": "application/json",
  });
}

async function uploadAll(dir, files) {
  const bar = document.getElementById("progress");
  const status = document.getElementById("upload-status");
  const total = Array.from(files).reduce((s, f) => s + f.size, 0) || 1;
  let done = 0;
  bar.hidden = false;
  bar.max = total;
  try {
    for (const f of files) {
      status.textContent = "Uploading " + f.name + "…";
      await upload(dir, f, (k) => (bar.value = done + k));
      done += f.size;
      bar.value = done;
    }
    status.textContent = "Uploaded " + files.length + " file(s).";
    status.id = "upload-done";
    setTimeout(() => location.reload(), 300);
  } catch (e) {
    status.textContent = "Upload failed: " + e.message;
  }
}

function wire() {
  const drop = document.getElementById("drop");
  if (drop) {
    const dir = drop.dataset.dir;
    drop.addEventListener("dragover", (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      uploadAll(dir, e.dataTransfer.files);
    });
    document.getElementById("files").addEventListener("change", (e) => uploadAll(dir, e.target.files));
  }
  for (const b of document.querySelectorAll("button.delete")) {
    b.addEventListener("click", async () => {
      try {
        await call("DELETE", b.dataset.path);
        if (document.getElementById("details")) {
          const parent = b.dataset.path.replace(/\/[^/]*$/, "");
          location.href = "/console/browse" + parent.split("/").map(encodeURIComponent).join("/");
        } else {
          location.reload();
        }
      } catch (e) {
        say("Delete failed: " + e.message);
      }
    });
  }
  const add = document.getElementById("new");
  if (add) {
    add.addEventListener("click", async () => {
      const name = document.getElementById("new-name").value.trim();
      if (!name) return;
      const headers =
        add.dataset.kind === "directory" ? { "content-type": "application/json; type=directory" } : {};
      try {
        await call("PUT", add.dataset.dir + "/" + name, null, headers);
        location.reload();
      } catch (e) {
        say("Could not create " + name + ": " + e.message);
      }
    });
  }
  const link = document.getElementById("snaplink");
  if (link) {
    link.addEventListener("click", async () => {
      const to = document.getElementById("link-to").value.trim();
      try {
        await call("PUT", to, null, {
          "content-type": "application/json; type=link",
          location: link.dataset.path,
        });
        location.href = "/console/browse" + to.split("/").map(encodeURIComponent).join("/");
      } catch (e) {
        say("Could not make the snaplink: " + e.message);
      }
    });
  }
  const live = document.getElementById("live");
  if (live) {
    setTimeout(() => location.reload(), 1000 * Number(live.dataset.refresh || 2));
  }
}

document.addEventListener("DOMContentLoaded", wire);
