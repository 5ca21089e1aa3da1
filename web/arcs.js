// The map's flying arcs, drawn on their own canvas: in a worker (arcs-worker.js, on an
// OffscreenCanvas, so the page's main thread makes no frame for them) or, where a browser
// cannot, by map.js itself. Nothing here touches the document.

export const ARC_FLIGHT_MS = 1300;
export const ARC_LIFE_MS = 2600;
// At most ~30 frames a second while arcs fly: they look as smooth as at 60, at half the work.
export const FRAME_MS = 33;

// An arc: seller (x0, y0), control point (cx, cy), buyer (x1, y1) in device px, stroke
// weight w, and when it starts (`born`, possibly a little ahead of now).

// The stretch t0..t1 (0 = seller, 1 = buyer) of an arc's quadratic Bezier, as one
// quadratic curve: its ends are the points at t0 and t1, its control point the curve's
// blossom at (t0, t1).
function strokeArc(ctx, a, t0, t1) {
  const u0 = 1 - t0;
  const u1 = 1 - t1;
  ctx.beginPath();
  ctx.moveTo(u0 * u0 * a.x0 + 2 * u0 * t0 * a.cx + t0 * t0 * a.x1, u0 * u0 * a.y0 + 2 * u0 * t0 * a.cy + t0 * t0 * a.y1);
  const m = u0 * t1 + t0 * u1;
  ctx.quadraticCurveTo(
    u0 * u1 * a.x0 + m * a.cx + t0 * t1 * a.x1,
    u0 * u1 * a.y0 + m * a.cy + t0 * t1 * a.y1,
    u1 * u1 * a.x0 + 2 * u1 * t1 * a.cx + t1 * t1 * a.x1,
    u1 * u1 * a.y0 + 2 * u1 * t1 * a.cy + t1 * t1 * a.y1,
  );
  ctx.stroke();
}

const rgba = (rgb, alpha) => "rgba(" + rgb[0] + "," + rgb[1] + "," + rgb[2] + "," + alpha + ")";

// The arcs at time `now` (clears the canvas first); `colors` holds the [r, g, b] of the
// trail ("arc") and of the comet and landing ring ("gold"). Returns how many are on
// screen or still to start: 0 once the canvas is blank and nothing waits.
export function drawArcs(ctx, arcs, now, dpr, colors) {
  ctx.clearRect(0, 0, ctx.canvas.width, ctx.canvas.height);
  ctx.lineCap = "round";
  let left = 0;
  for (const a of arcs) {
    const age = now - a.born;
    if (age >= ARC_LIFE_MS) continue;
    left++;
    if (age < 0) continue; // not started yet
    const p = Math.min(1, age / ARC_FLIGHT_MS);
    const head = 1 - (1 - p) * (1 - p); // ease-out flight
    const fade = age < ARC_FLIGHT_MS ? 1 : 1 - (age - ARC_FLIGHT_MS) / (ARC_LIFE_MS - ARC_FLIGHT_MS);
    // faint full trail
    ctx.lineWidth = a.w * dpr * 0.8;
    ctx.strokeStyle = rgba(colors.arc, (0.28 * fade).toFixed(3));
    strokeArc(ctx, a, 0, head);
    if (p < 1) {
      // bright comet near the head
      const t0 = Math.max(0, head - 0.22);
      ctx.lineWidth = a.w * dpr * 1.5;
      ctx.strokeStyle = rgba(colors.gold, 1);
      strokeArc(ctx, a, t0, head);
    } else {
      // landing ring
      const k = (age - ARC_FLIGHT_MS) / (ARC_LIFE_MS - ARC_FLIGHT_MS);
      ctx.strokeStyle = rgba(colors.gold, (0.9 * (1 - k)).toFixed(3));
      ctx.lineWidth = 1.4 * dpr;
      ctx.beginPath();
      ctx.arc(a.x1, a.y1, (2 + 9 * k) * dpr, 0, Math.PI * 2);
      ctx.stroke();
    }
  }
  return left;
}
