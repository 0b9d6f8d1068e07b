// QueryMeld annotation canvas: the js_on_load body of a gr.HTML (see app/canvas.py).
// Gradio provides `element`, `props`, `trigger`, `watch`. Python owns the annotation; this file only
// draws props.value (photo, overlay PNG, outline, points) under a zoom/pan transform and turns
// gestures into one `input` event each, with image-pixel coordinates: trigger('input', {gesture}).
// The transform: screen = image * scale + (tx, ty), in CSS pixels of the canvas' box.
const root = element.querySelector('.qmn-canvas');
const stage = root.querySelector('.qmn-stage');
const cv = stage.querySelector('canvas');
const ctx = cv.getContext('2d');
const strokeLayer = document.createElement('canvas');
const CLICK_SLOP = 4;        // screen px a press may move and still be a click
const HANDLE = 6;            // screen px hit radius of a polygon vertex
const LOCAL_KEYS = {c: 'point', v: 'select', b: 'brush', e: 'eraser', g: 'polygon'};
const st = {
  view: null, img: null, imgSrc: null, overlay: null, overlaySrc: null, version: 0,
  w: 0, h: 0, dpr: 1, scale: 1, tx: 0, ty: 0, fit: 1, moved: false,
  mode: 'point', negative: false, solo: null, radius: 8, opacity: 0.45, propOpacity: null,
  drag: null, space: false, hover: null, stroke: null, poly: null,
  sent: [], sentAt: [], latencies: [], acked: 0, renders: 0, shown: null,
};
root.qmn = st;  // read by tests and bench/canvas_latency.py

const zoom = () => st.scale / st.fit;
const local = (e) => { const r = cv.getBoundingClientRect(); return {x: e.clientX - r.left, y: e.clientY - r.top}; };
const toImage = (p) => ({x: (p.x - st.tx) / st.scale, y: (p.y - st.ty) / st.scale});
const toScreen = (x, y) => ({x: x * st.scale + st.tx, y: y * st.scale + st.ty});
const inImage = (q) => st.view && q.x >= 0 && q.y >= 0 && q.x < st.view.width && q.y < st.view.height;
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

function send(gesture) {
  st.sent.push(gesture);
  st.sentAt.push(performance.now());
  trigger('input', {gesture});
}

function fitView() {
  if (!st.view || !st.view.width || !st.w) return;
  st.fit = Math.min(st.w / st.view.width, st.h / st.view.height);
  st.scale = st.fit;
  st.tx = (st.w - st.view.width * st.fit) / 2;
  st.ty = (st.h - st.view.height * st.fit) / 2;
  st.moved = false;
}

function zoomAt(p, factor) {
  const lo = st.fit * 0.25, hi = Math.max(st.fit * 32, 16);
  const next = clamp(st.scale * factor, lo, hi);
  const q = toImage(p);
  st.scale = next;
  st.tx = p.x - q.x * next;
  st.ty = p.y - q.y * next;
  st.moved = true;
}

function resize() {
  const r = stage.getBoundingClientRect();
  if (r.width < 1 || r.height < 1) return;
  st.dpr = window.devicePixelRatio || 1;
  st.w = r.width; st.h = r.height;
  cv.width = Math.round(r.width * st.dpr); cv.height = Math.round(r.height * st.dpr);
  cv.style.width = r.width + 'px'; cv.style.height = r.height + 'px';
  if (!st.moved) fitView();
  draw();
}

function ringPath(ring) {
  for (let i = 0; i + 1 < ring.length; i += 2) {
    const s = toScreen(ring[i], ring[i + 1]);
    if (i === 0) ctx.moveTo(s.x, s.y); else ctx.lineTo(s.x, s.y);
  }
  ctx.closePath();
}

function drawOutline(rings, handles) {
  ctx.beginPath(); rings.forEach(ringPath);
  ctx.lineWidth = 4; ctx.strokeStyle = 'rgba(0,0,0,0.8)'; ctx.stroke();
  ctx.lineWidth = 2; ctx.strokeStyle = '#ffffff'; ctx.stroke();
  if (!handles) return;
  ctx.fillStyle = '#ffffff'; ctx.strokeStyle = '#000000'; ctx.lineWidth = 1;
  for (const ring of rings) for (let i = 0; i + 1 < ring.length; i += 2) {
    const s = toScreen(ring[i], ring[i + 1]);
    ctx.fillRect(s.x - 3, s.y - 3, 6, 6); ctx.strokeRect(s.x - 3, s.y - 3, 6, 6);
  }
}

function draw() {
  const v = st.view;
  ctx.setTransform(st.dpr, 0, 0, st.dpr, 0, 0);
  ctx.clearRect(0, 0, st.w, st.h);
  ctx.fillStyle = '#1f2328'; ctx.fillRect(0, 0, st.w, st.h);
  if (!v || !st.img) {
    ctx.fillStyle = '#aaa'; ctx.font = '14px sans-serif';
    ctx.fillText(v && v.image ? 'loading…' : 'No image: open a folder or upload one.', 16, 28);
    updateStatus(); return;
  }
  ctx.setTransform(st.dpr * st.scale, 0, 0, st.dpr * st.scale, st.dpr * st.tx, st.dpr * st.ty);
  ctx.imageSmoothingEnabled = st.scale < 2;
  ctx.drawImage(st.img, 0, 0, v.width, v.height);
  if (st.overlay) {
    const [ox, oy] = v.overlay_origin || [0, 0];
    ctx.globalAlpha = st.opacity; ctx.drawImage(st.overlay.canvas, ox, oy); ctx.globalAlpha = 1;
  }
  if (st.stroke) { ctx.globalAlpha = 0.6; ctx.drawImage(strokeLayer, 0, 0); ctx.globalAlpha = 1; }
  ctx.setTransform(st.dpr, 0, 0, st.dpr, 0, 0);
  const rings = st.poly || v.outline || [];
  if (rings.length) drawOutline(rings, st.mode === 'polygon');
  for (const [x, y, positive] of v.points || []) {
    const s = toScreen(x, y);
    ctx.beginPath(); ctx.arc(s.x, s.y, 5, 0, 2 * Math.PI);
    ctx.fillStyle = positive ? '#22c55e' : '#ef4444'; ctx.fill();
    ctx.lineWidth = 1.5; ctx.strokeStyle = '#fff'; ctx.stroke();
  }
  const d = st.drag;
  if (d && d.kind === 'press' && d.box) {
    ctx.setLineDash([5, 4]); ctx.lineWidth = 1.5; ctx.strokeStyle = '#facc15';
    ctx.strokeRect(Math.min(d.sx, d.cx), Math.min(d.sy, d.cy), Math.abs(d.cx - d.sx), Math.abs(d.cy - d.sy));
    ctx.setLineDash([]);
  }
  if (st.hover && (st.mode === 'brush' || st.mode === 'eraser')) {
    ctx.beginPath(); ctx.arc(st.hover.x, st.hover.y, st.radius * st.scale, 0, 2 * Math.PI);
    ctx.lineWidth = 1; ctx.strokeStyle = st.mode === 'eraser' ? '#ef4444' : '#ffffff'; ctx.stroke();
  }
  updateStatus();
}

function updateStatus() {
  root.dataset.zoom = zoom().toFixed(4);
  root.dataset.scale = st.scale.toFixed(4);
  root.dataset.mode = st.mode;
  root.dataset.renders = String(st.renders);
  const q = st.hover ? toImage(st.hover) : null;
  root.querySelector('.qmn-zoom').textContent = Math.round(zoom() * 100) + '%';
  root.querySelector('.qmn-pos').textContent = q && inImage(q) ? `x ${Math.floor(q.x)}  y ${Math.floor(q.y)}` : '';
  root.querySelector('.qmn-brush').textContent = `brush ${st.radius.toFixed(1)} px`;
  root.querySelectorAll('[data-mode]').forEach((b) => b.classList.toggle('on', b.dataset.mode === st.mode));
  root.querySelector('[data-toggle=negative]').classList.toggle('on', st.negative);
}

function renderClasses(v) {
  const box = root.querySelector('.qmn-classes');
  box.replaceChildren();
  (v.classes || []).forEach((c, i) => {
    const chip = document.createElement('button');
    chip.className = 'qmn-chip' + (i === v.active_class ? ' on' : '') + (st.solo === c.color ? ' solo' : '');
    chip.dataset.classIndex = String(i);
    chip.title = (i < 9 ? `key ${i + 1}: class of new masks, or relabel the selected one. ` : '') +
      'Right-click: show only this class (again: show all)';
    chip.addEventListener('contextmenu', (e) => {
      e.preventDefault();
      st.solo = st.solo === c.color ? null : c.color;
      if (st.overlay) colourOverlay(st.overlay);
      renderClasses(st.view); draw();
    });
    const dot = document.createElement('span');
    dot.style.background = c.color;
    chip.append(dot, `${i < 9 ? i + 1 + ' ' : ''}${c.name}`);
    if (i < 9) chip.addEventListener('click', () => send({type: 'key', key: String(i + 1)}));
    box.append(chip);
  });
  const more = v.more || {};
  if (more.held > 0 || more.all) {  // low-score proposals wait behind one chip instead of flooding the view
    const chip = document.createElement('button');
    chip.className = 'qmn-chip qmn-more';
    chip.title = 'key m';
    chip.textContent = more.all ? 'show fewer (m)' : `show ${more.held} more (m)`;
    chip.addEventListener('click', () => send({type: 'key', key: 'm'}));
    box.append(chip);
  }
}

async function loadImage(src) {
  const im = new Image();
  im.src = src;
  await im.decode();
  return im;
}

// The overlay arrives as a one-channel index PNG (value v>0 = overlay_colors[v-1]): colour it here
// with a lookup table into a canvas of the masks' bounding box. `st.solo` (a class colour, set by
// right-clicking a class chip) shows only that class.
async function loadOverlay(v) {
  const im = await loadImage(v.overlay);
  const c = document.createElement('canvas');
  c.width = im.width; c.height = im.height;
  const g = c.getContext('2d', {willReadFrequently: true});
  g.drawImage(im, 0, 0);
  const data = g.getImageData(0, 0, c.width, c.height);
  const index = new Uint8Array(c.width * c.height);
  for (let i = 0; i < index.length; i++) index[i] = data.data[4 * i];
  const overlay = {canvas: c, index, data, colors: v.overlay_colors || []};
  colourOverlay(overlay);
  return overlay;
}

function colourOverlay(ov) {
  const lut = new Uint32Array(256), px = new Uint32Array(ov.data.data.buffer);
  ov.colors.forEach((hex, i) => {
    const n = parseInt(hex.slice(1), 16);
    if (!st.solo || st.solo === hex) lut[i + 1] = (255 << 24) | ((n & 255) << 16) | (((n >> 8) & 255) << 8) | (n >> 16);
  });
  for (let i = 0; i < px.length; i++) px[i] = lut[ov.index[i]];
  ov.canvas.getContext('2d').putImageData(ov.data, 0, 0);
}

const overlayKey = (v) => (v.overlay ? v.overlay + '|' + (v.overlay_colors || []).join() : null);

async function onView(v) {
  const version = ++st.version;
  st.view = v && typeof v === 'object' ? v : null;
  st.poly = null;
  if (!st.view) { st.img = st.overlay = null; draw(); return; }
  if (v.opacity !== st.propOpacity) {
    st.propOpacity = v.opacity; st.opacity = v.opacity;
    root.querySelector('.qmn-opacity').value = String(Math.round(v.opacity * 100));
  }
  renderClasses(v);
  try {
    const [img, overlay] = await Promise.all([
      v.image === st.imgSrc ? st.img : (v.image ? loadImage(v.image) : null),
      overlayKey(v) === st.overlaySrc ? st.overlay : (v.overlay ? loadOverlay(v) : null),
    ]);
    if (version !== st.version) return;  // a newer view arrived meanwhile
    const newPhoto = v.image !== st.imgSrc;
    st.img = img; st.imgSrc = v.image; st.overlay = overlay; st.overlaySrc = overlayKey(v);
    if (newPhoto) { strokeLayer.width = v.width; strokeLayer.height = v.height; fitView(); }
  } catch (err) {
    console.error('qmn canvas: could not load image', err);
  }
  st.stroke = null;
  draw();
  st.renders += 1;
  st.shown = v;  // the view now on screen (tests wait on it)
  // round trip of the gesture Python just answered (props.ack counts answers): send -> drawn
  if (Number.isInteger(v.ack) && v.ack > st.acked && v.ack <= st.sentAt.length) {
    st.latencies.push(performance.now() - st.sentAt[v.ack - 1]);
    st.acked = v.ack;
  }
  updateStatus();
}

function paintStroke(q) {
  const s = st.stroke, c = strokeLayer.getContext('2d');
  c.fillStyle = c.strokeStyle = s.erase ? '#ef4444' : '#ffffff';
  c.lineCap = 'round'; c.lineWidth = 2 * st.radius;
  const last = s.points[s.points.length - 1];
  c.beginPath(); c.arc(q.x, q.y, st.radius, 0, 2 * Math.PI); c.fill();
  if (last) { c.beginPath(); c.moveTo(last[0], last[1]); c.lineTo(q.x, q.y); c.stroke(); }
  s.points.push([q.x, q.y]);
}

function nearestVertex(p) {
  let best = null;
  (st.poly || []).forEach((ring, r) => {
    for (let i = 0; i + 1 < ring.length; i += 2) {
      const s = toScreen(ring[i], ring[i + 1]), d = Math.hypot(s.x - p.x, s.y - p.y);
      if (d <= HANDLE && (!best || d < best.d)) best = {ring: r, index: i, d};
    }
  });
  return best;
}

function nearestEdge(p) {
  let best = null;
  (st.poly || []).forEach((ring, r) => {
    const n = ring.length / 2;
    for (let i = 0; i < n; i++) {
      const a = toScreen(ring[2 * i], ring[2 * i + 1]), b = toScreen(ring[(2 * i + 2) % ring.length], ring[(2 * i + 3) % ring.length]);
      const dx = b.x - a.x, dy = b.y - a.y, len2 = dx * dx + dy * dy || 1;
      const t = clamp(((p.x - a.x) * dx + (p.y - a.y) * dy) / len2, 0, 1);
      const d = Math.hypot(a.x + t * dx - p.x, a.y + t * dy - p.y);
      if (d <= HANDLE && (!best || d < best.d)) best = {ring: r, index: 2 * i + 2, d};
    }
  });
  return best;
}

function editablePolygon() {
  if (!st.poly && st.view && st.view.selected !== null && (st.view.outline || []).length)
    st.poly = st.view.outline.map((ring) => ring.slice());
  return st.poly;
}

function sendPolygon() {
  send({type: 'polygon', id: st.view.selected, polygons: st.poly.map((ring) => ring.slice())});
}

function removeVertex(p) {
  const hit = editablePolygon() && nearestVertex(p);
  if (!hit || st.poly[hit.ring].length <= 6) return false;
  st.poly[hit.ring].splice(hit.index, 2);
  sendPolygon(); draw();
  return true;
}

function release(d, p) {
  const q = toImage(p);
  const start = {x: d.ix, y: d.iy};
  if (d.box) {
    const v = st.view;
    const box = [Math.min(start.x, q.x), Math.min(start.y, q.y), Math.max(start.x, q.x), Math.max(start.y, q.y)];
    const clipped = [clamp(box[0], 0, v.width), clamp(box[1], 0, v.height), clamp(box[2], 0, v.width), clamp(box[3], 0, v.height)];
    if (clipped[2] - clipped[0] >= 1 && clipped[3] - clipped[1] >= 1) send({type: 'box', box: clipped});
    return;
  }
  if (!inImage(start)) return;
  if (st.mode === 'polygon' && editablePolygon()) {
    if (d.alt && removeVertex(p)) return;
    const edge = nearestEdge(p);
    if (edge) { st.poly[edge.ring].splice(edge.index, 0, q.x, q.y); sendPolygon(); draw(); return; }
  }
  if (st.mode === 'point') send({type: 'point', x: start.x, y: start.y, positive: !(d.shift || st.negative)});
  else send({type: 'select', x: start.x, y: start.y});
}

cv.addEventListener('pointerdown', (e) => {
  root.focus({preventScroll: true});
  if (!st.view || !st.img) return;
  const p = local(e), q = toImage(p);
  if (e.button === 1 || (e.button === 0 && st.space)) {
    e.preventDefault();
    st.drag = {kind: 'pan', sx: p.x, sy: p.y, tx: st.tx, ty: st.ty};
  } else if (e.button === 2) {
    if (st.mode === 'polygon') removeVertex(p);
    return;
  } else if (e.button !== 0) {
    return;
  } else if (st.mode === 'brush' || st.mode === 'eraser') {
    st.stroke = {points: [], erase: st.mode === 'eraser'};
    strokeLayer.getContext('2d').clearRect(0, 0, strokeLayer.width, strokeLayer.height);
    paintStroke(q);
  } else {
    const vertex = st.mode === 'polygon' && editablePolygon() && !e.altKey ? nearestVertex(p) : null;
    st.drag = vertex ? {kind: 'vertex', ...vertex}
      : {kind: 'press', sx: p.x, sy: p.y, cx: p.x, cy: p.y, ix: q.x, iy: q.y, shift: e.shiftKey, alt: e.altKey, box: false};
  }
  cv.setPointerCapture(e.pointerId);
  draw();
});

cv.addEventListener('pointermove', (e) => {
  const p = local(e), q = toImage(p), d = st.drag;
  st.hover = p;
  if (d && d.kind === 'pan') { st.tx = d.tx + p.x - d.sx; st.ty = d.ty + p.y - d.sy; st.moved = true; }
  else if (d && d.kind === 'vertex') { st.poly[d.ring][d.index] = q.x; st.poly[d.ring][d.index + 1] = q.y; d.changed = true; }
  else if (d && d.kind === 'press') { d.cx = p.x; d.cy = p.y; d.box = d.box || Math.hypot(p.x - d.sx, p.y - d.sy) > CLICK_SLOP; }
  else if (st.stroke) {
    const last = st.stroke.points[st.stroke.points.length - 1];
    if (Math.hypot(q.x - last[0], q.y - last[1]) >= Math.max(0.5, st.radius / 4)) paintStroke(q);
  }
  draw();
});

function endPointer(e) {
  const p = local(e), d = st.drag;
  st.drag = null;
  if (st.stroke && st.stroke.points.length) {
    send({type: 'stroke', points: st.stroke.points, radius: st.radius, erase: st.stroke.erase});
    st.stroke.points = [];  // the layer stays visible until Python's new overlay arrives
  } else if (d && d.kind === 'vertex') {
    if (d.changed) sendPolygon();
  } else if (d && d.kind === 'press' && e.type === 'pointerup') {
    release(d, p);
  }
  draw();
}
cv.addEventListener('pointerup', endPointer);
cv.addEventListener('pointercancel', endPointer);
cv.addEventListener('pointerleave', () => { st.hover = null; draw(); });
cv.addEventListener('contextmenu', (e) => e.preventDefault());
cv.addEventListener('auxclick', (e) => e.preventDefault());
cv.addEventListener('wheel', (e) => {
  if (!st.view || !st.img) return;
  e.preventDefault();
  const delta = e.deltaY * (e.deltaMode === 1 ? 33 : e.deltaMode === 2 ? 400 : 1);
  // wheel events carry whole-pixel client coordinates, pointer events fractional ones: zoom about
  // the last pointer position when it is the same spot, so the point under the cursor stays put
  const w = local(e), h = st.hover;
  zoomAt(h && Math.abs(h.x - w.x) <= 1 && Math.abs(h.y - w.y) <= 1 ? h : w, Math.pow(1.25, -delta / 100));
  draw();
}, {passive: false});

function keyName(e) {
  const mods = (e.ctrlKey || e.metaKey ? 'ctrl+' : '') + (e.shiftKey && e.key.length > 1 || (e.ctrlKey && e.shiftKey) ? 'shift+' : '');
  return mods + e.key.toLowerCase();
}

root.addEventListener('keydown', (e) => {
  const tag = (e.target && e.target.tagName) || '';
  if (tag === 'INPUT' || tag === 'TEXTAREA') return;  // the opacity slider keeps its arrow keys
  const name = keyName(e);
  let handled = true;
  if (e.key === ' ') { st.space = true; cv.style.cursor = 'grab'; }
  else if (e.key === '[') st.radius = Math.max(0.5, st.radius / 1.25);
  else if (e.key === ']') st.radius = Math.min(500, st.radius * 1.25);
  else if (e.key === 'x' && !e.ctrlKey) st.negative = !st.negative;
  else if (e.key === 'f' && !e.ctrlKey) { fitView(); }
  else if (LOCAL_KEYS[e.key] && !e.ctrlKey && !e.metaKey) { st.mode = LOCAL_KEYS[e.key]; st.poly = null; }
  else if (st.view && (st.view.keys || []).includes(name)) send({type: 'key', key: name});
  else handled = false;
  if (handled) { e.preventDefault(); e.stopPropagation(); draw(); }
});
root.addEventListener('keyup', (e) => { if (e.key === ' ') { st.space = false; cv.style.cursor = ''; e.stopPropagation(); } });
root.addEventListener('blur', () => { st.space = false; cv.style.cursor = ''; });

root.querySelectorAll('[data-mode]').forEach((b) => b.addEventListener('click', () => { st.mode = b.dataset.mode; st.poly = null; draw(); }));
root.querySelector('[data-toggle=negative]').addEventListener('click', () => { st.negative = !st.negative; draw(); });
root.querySelector('[data-action=fit]').addEventListener('click', () => { fitView(); draw(); });
root.querySelector('.qmn-opacity').addEventListener('input', (e) => { st.opacity = Number(e.target.value) / 100; draw(); });

new ResizeObserver(resize).observe(stage);
watch('value', () => onView(props.value));
resize();
onView(props.value);
