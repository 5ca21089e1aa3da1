// The page's colours are declared once, as custom properties in style.css (:root); the
// canvases read them here, so a colour changed there changes on the canvases too.
// Module scripts run after the style sheet has loaded, so the values are there.

const root = getComputedStyle(document.documentElement);

// "#rrggbb" (or "#rgb") of --name as [r, g, b].
function channels(name) {
  let hex = root.getPropertyValue("--" + name).trim().replace(/^#/, "");
  if (hex.length === 3) hex = [...hex].map((c) => c + c).join("");
  const n = parseInt(hex, 16);
  if (!/^[0-9a-f]{6}$/i.test(hex)) throw new Error("style.css: --" + name + " is not a #rrggbb colour");
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

const cache = new Map();

// The colour --name as [r, g, b].
export function rgb(name) {
  let c = cache.get(name);
  if (!c) cache.set(name, (c = channels(name)));
  return c;
}

// The colour --name as a canvas style, at opacity `alpha` (1 = opaque).
export function color(name, alpha = 1) {
  const c = rgb(name);
  if (alpha === 1) return "#" + c.map((v) => v.toString(16).padStart(2, "0")).join("");
  return "rgba(" + c.join(",") + "," + alpha + ")";
}
