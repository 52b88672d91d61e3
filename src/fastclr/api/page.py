"""The page ``fastclr serve`` shows at ``/``: one self-contained HTML file (no external script, style or font).

Drop or pick an image (or open ``/?id=ID`` for an indexed image): the page posts it to ``/search``, shows the
neighbours as thumbnails (``/thumb/ID``) with their cosine scores, and overlays on the query the map of the
regions that make it similar to the selected neighbour (``/explain``; click another neighbour to switch). With a
token the page sends ``Authorization: Bearer TOKEN``, read from ``#token=...`` in its address or asked for.
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fastclr search</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d232b}
header{padding:14px 24px;background:#1d232b;color:#fff}header b{font-size:18px}#facts{opacity:.75;margin-left:14px}
main{display:grid;grid-template-columns:290px 1fr;gap:24px;padding:24px}
#drop{display:block;border:2px dashed #8a94a3;border-radius:10px;padding:18px;text-align:center;background:#fff;
cursor:pointer}#drop.over{border-color:#2b6de8;background:#eef3fd}
#query{position:relative;width:256px;height:256px;margin:16px 0;background:#e3e6ea;border-radius:8px;overflow:hidden}
#query img{position:absolute;inset:0;width:100%;height:100%;object-fit:cover}#heat{opacity:0;transition:opacity .2s}
#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:14px}
.card{background:#fff;border-radius:8px;padding:8px;box-shadow:0 1px 3px #0003;cursor:pointer}
.card img{width:100%;aspect-ratio:1;object-fit:cover;border-radius:4px;background:#e3e6ea;display:block}
.card.sel{outline:3px solid #e8452b}.score{font-weight:600;margin-top:4px}
.id{font-size:12px;color:#5b6573;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
#status{min-height:1.4em;color:#5b6573;word-break:break-all}.error{color:#c62828!important}small{color:#5b6573}
</style></head><body>
<header><b>fastclr</b><span id="facts">loading&hellip;</span></header>
<main><section>
<label id="drop">Drop an image here, or <u>pick one</u><input id="file" type="file" accept="image/*" hidden></label>
<div id="query"><img id="qimg" alt=""><img id="heat" alt=""></div>
<label><input id="show" type="checkbox" checked> explanation overlay</label>
<p><small id="explained">The overlay marks the regions of the query that make it similar to the selected
neighbour (occlusion: red where hiding the region lowers the similarity most).</small></p>
<p id="status"></p>
<input id="token" type="password" placeholder="bearer token, then Enter" hidden>
</section><section><div id="grid"></div></section></main>
<script>
const $ = (id) => document.getElementById(id);
let token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
let query = null;  // {file: File} or {id: string}
function status(text, bad) { $("status").textContent = text; $("status").className = bad ? "error" : ""; }
async function call(path, body) {
  const headers = token ? {Authorization: "Bearer " + token} : {};
  const r = await fetch(path, {method: body ? "POST" : "GET", body, headers});
  if (r.status === 401) { $("token").hidden = false; throw new Error("this service wants its bearer token"); }
  if (!r.ok) {
    let d = r.statusText; try { d = (await r.json()).detail; } catch (e) {}
    throw new Error(typeof d === "string" ? d : JSON.stringify(d));
  }
  return r;
}
async function picture(path, body) { return URL.createObjectURL(await (await call(path, body)).blob()); }
function thumb(id) { return "/thumb/" + encodeURIComponent(id); }
function queryForm(extra) {
  const f = new FormData();
  for (const [k, v] of Object.entries(extra)) f.append(k, v);
  return f;
}
async function explain(id, card) {
  document.querySelectorAll(".card.sel").forEach((c) => c.classList.remove("sel"));
  card.classList.add("sel");
  const f = queryForm(query.file ? {image: query.file, id} : {query_id: query.id, id});
  try {
    $("heat").src = await picture("/explain", f);
    $("heat").style.opacity = $("show").checked ? 1 : 0;
  } catch (e) { status("explanation: " + e.message, true); }
}
async function search() {
  $("grid").innerHTML = ""; $("heat").style.opacity = 0; status("searching\\u2026");
  try {
    const f = queryForm(query.file ? {image: query.file, k: 12} : {id: query.id, k: 12});
    const res = await (await call("/search", f)).json();
    status(res.neighbours.length + " neighbours of " + (query.file ? query.file.name : query.id));
    const cards = res.neighbours.map((n) => {
      const card = document.createElement("div");
      card.className = "card";
      card.innerHTML = '<img alt=""><div class="score"></div><div class="id"></div>';
      card.querySelector(".score").textContent = n.score.toFixed(3);
      card.querySelector(".id").textContent = n.id.split("/").pop(); card.title = n.id;
      card.onclick = () => explain(n.id, card);
      $("grid").appendChild(card);
      return picture(thumb(n.id)).then((u) => { card.querySelector("img").src = u; });
    });
    await Promise.all(cards);
    if (res.neighbours.length) await explain(res.neighbours[0].id, $("grid").firstChild);
    document.body.dataset.ready = "1";
  } catch (e) { status(e.message, true); }
}
function useFile(file) { if (!file) return; query = {file}; $("qimg").src = URL.createObjectURL(file); search(); }
$("file").onchange = (e) => useFile(e.target.files[0]);
$("drop").ondragover = (e) => { e.preventDefault(); $("drop").classList.add("over"); };
$("drop").ondragleave = () => $("drop").classList.remove("over");
$("drop").ondrop = (e) => { e.preventDefault(); $("drop").classList.remove("over"); useFile(e.dataTransfer.files[0]); };
$("show").onchange = () => { $("heat").style.opacity = $("show").checked && $("heat").src ? 1 : 0; };
$("token").onkeydown = (e) => { if (e.key === "Enter") { token = e.target.value; $("token").hidden = true; start(); } };
async function start() {
  try {
    const h = await (await call("/health")).json();
    $("facts").textContent = h.count + " images, " + h.kind + " search, " + h.dim + "-d " + (h.projection ? "z" : "h");
    const id = new URLSearchParams(location.search).get("id");
    if (id && !query) { query = {id}; $("qimg").src = await picture(thumb(id)); }
    if (query) await search();
  } catch (e) { status(e.message, true); }
}
start();
</script></body></html>
"""
