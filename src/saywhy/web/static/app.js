// saywhy's pages: show an attribute's heatmap on hover, focus or click; paste an image to upload it;
// filter the report's search results. Plain JavaScript, nothing fetched from elsewhere.
(function () {
  "use strict";
  function showHeatmap(button) {
    var card = button.closest(".explain");
    if (!card) { return; }
    var img = card.querySelector("img.heatmap");
    if (img.getAttribute("src") !== button.dataset.heatmap) { img.setAttribute("src", button.dataset.heatmap); }
    img.setAttribute("alt", "heatmap of " + button.dataset.name);
    card.querySelector(".heatmap-name").textContent = button.dataset.name;
    card.querySelectorAll("button.attribute").forEach(function (b) {
      b.setAttribute("aria-pressed", b === (card.pinned || button) ? "true" : "false");
    });
  }
  // Click or focus picks an attribute; hovering shows another one until the pointer leaves it.
  document.querySelectorAll("button.attribute[data-heatmap]").forEach(function (button) {
    var card = button.closest(".explain");
    ["click", "focus"].forEach(function (event) {
      button.addEventListener(event, function () { card.pinned = button; showHeatmap(button); });
    });
    button.addEventListener("mouseenter", function () { showHeatmap(button); });
    button.addEventListener("mouseleave", function () { if (card.pinned) { showHeatmap(card.pinned); } });
  });
  var upload = document.querySelector("form.upload");
  if (upload) {
    document.addEventListener("paste", function (event) {
      var items = event.clipboardData ? Array.prototype.slice.call(event.clipboardData.files) : [];
      var image = items.filter(function (f) { return f.type.indexOf("image/") === 0; })[0];
      if (!image) { return; }
      var transfer = new DataTransfer();
      transfer.items.add(image);
      upload.querySelector("input[type=file]").files = transfer.files;
      upload.submit();
    });
  }
  var filter = document.getElementById("search-filter");
  if (filter) {
    filter.addEventListener("input", function () {
      var wanted = filter.value.trim().toLowerCase();
      document.querySelectorAll(".search-result").forEach(function (section) {
        section.hidden = wanted !== "" && section.dataset.attribute.toLowerCase().indexOf(wanted) < 0;
      });
    });
  }
})();
