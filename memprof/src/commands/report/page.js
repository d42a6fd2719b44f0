// Search and zoom for the flame graphs; nothing is fetched.
"use strict";
(function () {
  const WIDTH = 1200;
  const frames = (svg) => Array.from(svg.querySelectorAll("g.frame"));
  const num = (g, k) => parseFloat(g.dataset[k]);
  // Places are printed to six decimals: a frame's children may overhang it by their rounding.
  const EPS = 1e-5;

  // Lays the frames of `svg` out with `focus` (a frame) spanning the whole width.
  function zoom(svg, focus) {
    const zx = focus ? num(focus, "x") : 0;
    const zw = focus ? num(focus, "w") : 1;
    const zd = focus ? num(focus, "d") : 0;
    for (const g of frames(svg)) {
      const x = num(g, "x"), w = num(g, "w"), d = num(g, "d");
      const inside = d >= zd && x >= zx - EPS && x + w <= zx + zw + EPS;
      const above = d < zd && x <= zx + EPS && x + w >= zx + zw - EPS;
      g.classList.toggle("hidden", !(inside || above));
      g.classList.toggle("above", above);
      const px = above ? 0 : ((x - zx) / zw) * WIDTH;
      const pw = above ? WIDTH : (w / zw) * WIDTH;
      const rect = g.querySelector("rect");
      rect.setAttribute("x", px.toFixed(2));
      rect.setAttribute("width", pw.toFixed(2));
      const text = g.querySelector("text");
      text.setAttribute("x", (px + 3).toFixed(2));
      text.textContent = fit(g.dataset.name, pw);
    }
    svg.dataset.zoomed = focus ? focus.dataset.name : "";
  }

  function fit(name, width) {
    const room = Math.floor((width - 6) / 7);
    if (room < 3) return "";
    return name.length <= room ? name : name.slice(0, room - 2) + "..";
  }

  function search(query) {
    const q = query.trim().toLowerCase();
    let count = 0;
    for (const g of document.querySelectorAll("svg.flame g.frame")) {
      const hit = q !== "" && g.dataset.name.toLowerCase().includes(q);
      g.classList.toggle("match", hit);
      if (hit) count++;
    }
    const status = document.getElementById("search-status");
    status.textContent = q === "" ? "" : count + " frame" + (count === 1 ? "" : "s") + " match";
  }

  document.addEventListener("DOMContentLoaded", function () {
    for (const svg of document.querySelectorAll("svg.flame")) {
      svg.addEventListener("click", function (e) {
        const g = e.target.closest("g.frame");
        if (!g) return;
        zoom(svg, num(g, "d") === 0 ? null : g);
      });
    }
    for (const b of document.querySelectorAll("button.reset")) {
      b.addEventListener("click", function () {
        zoom(document.getElementById(b.dataset.for), null);
      });
    }
    const input = document.getElementById("search");
    input.addEventListener("input", function () { search(input.value); });
  });
})();
