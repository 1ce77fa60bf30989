(function () {
  var seen = [];
  [["chart", "progress"], ["table", "trials"]].forEach(function (p) {
    var el = document.getElementById(p[1]);
    if (!el) return;
    var r = el.getBoundingClientRect(), s = getComputedStyle(el);
    if (r.width > 0 && r.height > 0 && s.display !== "none" && s.visibility !== "hidden") seen.push(p[0]);
  });
  document.body.dataset.visible = seen.join(" ");
})();
