/* SkyDeck: small vanilla helpers around htmx. No build step. */
(function () {
  "use strict";

  var pendingDeckActions = 0; // non-GET requests aimed at #deck that have not answered yet
  var deckSeq = 0;            // order in which deck requests were sent
  var lastAppliedSeq = 0;     // the newest deck response shown so far
  var selected = new Set();   // experiment ids ticked in the tables
  var stash = null;           // open detail rows kept across a deck swap
  var pickerValues = {};      // chosen groups kept across a deck swap
  var GROUP_PICKERS = ["bulk-group-select", "id_group"];

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  function isTyping(el) {
    if (!el) return false;
    var tag = el.tagName;
    if (tag === "TEXTAREA" || tag === "SELECT" || el.isContentEditable) return true;
    return tag === "INPUT" && !/^(checkbox|radio|button|submit|reset)$/i.test(el.type);
  }

  function isDeckTarget(target) { return target && target.id === "deck"; }

  var SkyDeck = {
    /** Whether the periodic deck refresh may run now (no edit in progress inside the deck). */
    deckIdle: function () {
      if (pendingDeckActions > 0) return false;
      var deck = document.getElementById("deck");
      if (!deck) return false;
      if (deck.contains(document.activeElement) && isTyping(document.activeElement)) return false;
      if (deck.querySelector("details.rename[open]")) return false;
      return true;
    }
  };
  window.SkyDeck = SkyDeck;

  // --- toast ---------------------------------------------------------------------------------
  var toastTimer = null;
  function toast(text) {
    var el = document.getElementById("toast");
    if (!el) return;
    el.textContent = text;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { el.hidden = true; }, 6000);
  }

  // --- selection -----------------------------------------------------------------------------
  function boxes() { return $all('#deck input[type="checkbox"][name="ids"]'); }

  function renderSelection() {
    var present = new Set();
    boxes().forEach(function (box) {
      present.add(box.value);
      box.checked = selected.has(box.value);
      var row = box.closest("tr");
      if (row) row.classList.toggle("is-selected", box.checked);
    });
    selected.forEach(function (id) { if (!present.has(id)) selected.delete(id); });
    $all("#deck [data-select-all]").forEach(function (all) {
      var inTable = $all('input[name="ids"]', all.closest("table"));
      var ticked = inTable.filter(function (b) { return b.checked; }).length;
      all.checked = inTable.length > 0 && ticked === inTable.length;
      all.indeterminate = ticked > 0 && ticked < inTable.length;
    });
    var count = selected.size;
    var label = document.getElementById("selection-count");
    if (label) label.textContent = count ? count + " selected" : "No experiments selected";
    var bar = document.getElementById("bulk-form");
    if (bar) {
      bar.classList.toggle("has-selection", count > 0);
      $all('button[name="action"]', bar).forEach(function (b) { b.disabled = count === 0; });
    }
  }

  document.addEventListener("change", function (e) {
    var el = e.target;
    if (el.matches && el.matches('#deck input[name="ids"]')) {
      if (el.checked) selected.add(el.value); else selected.delete(el.value);
      renderSelection();
    } else if (el.matches && el.matches("#deck [data-select-all]")) {
      $all('input[name="ids"]', el.closest("table")).forEach(function (b) {
        if (el.checked) selected.add(b.value); else selected.delete(b.value);
      });
      renderSelection();
    }
  });

  // --- expanded rows -------------------------------------------------------------------------
  function expandLink(row) { return row && row.querySelector("a[data-expand]"); }

  function openDetail(row) {
    var link = expandLink(row);
    var tr = document.createElement("tr");
    tr.className = "detail-row";
    tr.id = row.dataset.detailId;
    tr.dataset.forRow = row.id;
    tr.dataset.expId = row.dataset.expId;
    var td = document.createElement("td");
    td.colSpan = row.cells.length;
    td.innerHTML = '<p class="muted">Loading…</p>';
    tr.appendChild(td);
    row.after(tr);
    if (link) link.setAttribute("aria-expanded", "true");
    htmx.ajax("GET", link.getAttribute("href"), { target: td, swap: "innerHTML" });
  }

  function closeDetail(tr) {
    var row = document.getElementById(tr.dataset.forRow);
    tr.remove();
    var link = expandLink(row);
    if (link) { link.setAttribute("aria-expanded", "false"); link.focus(); }
  }

  document.addEventListener("click", function (e) {
    var link = e.target.closest && e.target.closest("#deck a[data-expand]");
    if (link && !(e.metaKey || e.ctrlKey || e.shiftKey || e.altKey || e.button > 0)) {
      e.preventDefault();
      var row = link.closest("tr");
      var open = document.getElementById(row.dataset.detailId);
      if (open) closeDetail(open); else openDetail(row);
      return;
    }
    var closer = e.target.closest && e.target.closest("[data-collapse-detail]");
    if (closer) {
      var tr = closer.closest("tr.detail-row");
      if (tr) closeDetail(tr);
      return;
    }
    var clear = e.target.closest && e.target.closest("[data-clear-selection]");
    if (clear) { selected.clear(); renderSelection(); return; }

    // dialogs
    var opener = e.target.closest && e.target.closest("[data-open-dialog]");
    if (opener) {
      var dialog = document.getElementById(opener.dataset.openDialog);
      if (dialog && dialog.showModal) {
        e.preventDefault();
        dialog.showModal();
        var first = dialog.querySelector("input:not([type=hidden]), select, textarea");
        if (first) first.focus();
      }
      return;
    }
    var closeBtn = e.target.closest && e.target.closest("[data-close-dialog]");
    if (closeBtn) { var d = closeBtn.closest("dialog"); if (d) d.close(); return; }

    // flags editor
    var add = e.target.closest && e.target.closest("[data-add-flag]");
    if (add) {
      var editor = add.closest("[data-flags-editor]");
      var tpl = editor.querySelector("template[data-flag-template]");
      var rows = editor.querySelector("[data-flag-rows]");
      var clone = tpl.content.firstElementChild.cloneNode(true);
      rows.appendChild(clone);
      clone.querySelector("input").focus();
      return;
    }
    var remove = e.target.closest && e.target.closest("[data-remove-flag]");
    if (remove) {
      var tr2 = remove.closest("tr");
      var body = tr2.parentNode;
      var next = tr2.nextElementSibling || tr2.previousElementSibling;
      tr2.remove();
      if (!body.querySelector("tr")) {
        var ed = body.closest("[data-flags-editor]");
        body.appendChild(ed.querySelector("template[data-flag-template]").content.firstElementChild.cloneNode(true));
      }
      var focusTarget = (next && next.isConnected && next.querySelector("input")) || body.querySelector("input");
      if (focusTarget) focusTarget.focus();
      return;
    }

    // copy buttons
    var copy = e.target.closest && e.target.closest("[data-copy]");
    if (copy) {
      var source = copy.parentNode.querySelector("[data-copy-source]");
      var text = source ? source.textContent : "";
      var done = function () { copy.textContent = "Copied"; setTimeout(function () { copy.textContent = "Copy"; }, 1500); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { selectText(source); });
      } else { selectText(source); }
    }
  });

  function selectText(el) {
    if (!el) return;
    var range = document.createRange();
    range.selectNodeContents(el);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }

  // --- flag value kinds (mirror of forms.parse_flag_value) ------------------------------------
  function flagKind(text) {
    var t = text.trim();
    if (!t) return "";
    if (/^(true|false)$/i.test(t)) return "bool";
    if (/^[-+]?\d+$/.test(t)) return "int";
    if (/^[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$/.test(t)) return "float";
    if (/^[{[]/.test(t) || /^null$/i.test(t)) return "json";
    return "str";
  }
  document.addEventListener("input", function (e) {
    if (e.target.matches && e.target.matches('input[name="flag_value"]')) {
      var kind = e.target.parentNode.querySelector("[data-kind]");
      if (kind) kind.textContent = flagKind(e.target.value);
    }
  });

  // --- keyboard --------------------------------------------------------------------------------
  document.addEventListener("keydown", function (e) {
    if (e.key === "/" && !isTyping(e.target) && !e.metaKey && !e.ctrlKey && !e.altKey) {
      var search = document.getElementById("search");
      if (search) { e.preventDefault(); search.focus(); search.select(); }
    } else if (e.key === "Escape" && e.target.id === "search" && e.target.value) {
      e.target.value = "";
      htmx.trigger(e.target.form, "submit");
    }
  });

  // --- htmx: confirmations, deck swaps, errors --------------------------------------------------
  document.addEventListener("htmx:confirm", function (e) {
    var trigger = e.detail.triggeringEvent;
    var submitter = trigger && trigger.submitter;
    var question = submitter && submitter.dataset && submitter.dataset.confirm;
    if (!question) return;
    e.preventDefault();
    if (window.confirm(question)) e.detail.issueRequest(true);
  });

  document.addEventListener("htmx:beforeRequest", function (e) {
    if (!isDeckTarget(e.detail.target)) return;
    e.detail.xhr.skydeckSeq = ++deckSeq;
    e.detail.xhr.skydeckAction = e.detail.requestConfig.verb !== "get";
    if (e.detail.xhr.skydeckAction) pendingDeckActions++;
  });
  document.addEventListener("htmx:afterRequest", function (e) {
    if (e.detail.xhr && e.detail.xhr.skydeckAction) {
      e.detail.xhr.skydeckAction = false;
      pendingDeckActions = Math.max(0, pendingDeckActions - 1);
    }
  });

  document.addEventListener("htmx:beforeSwap", function (e) {
    if (!isDeckTarget(e.detail.target) || !e.detail.shouldSwap) return;
    var xhr = e.detail.xhr;
    if (xhr.getResponseHeader("HX-Reswap") === "none") return; // unchanged: header only
    var isAction = xhr.skydeckAction;
    // a refresh that was overtaken by a change (or a newer refresh) would show old state
    if (!isAction && (pendingDeckActions > 0 || (xhr.skydeckSeq || 0) < lastAppliedSeq)) {
      e.detail.shouldSwap = false;
      return;
    }
    lastAppliedSeq = Math.max(lastAppliedSeq, xhr.skydeckSeq || 0);
    // keep open detail rows (and whatever is typed in their editors) across the swap
    stash = $all("#deck tr.detail-row").map(function (tr) { tr.remove(); return tr; });
    // the group pickers outside the deck are refreshed out of band: keep their choice
    pickerValues = {};
    GROUP_PICKERS.forEach(function (id) {
      var el = document.getElementById(id);
      if (el) pickerValues[id] = el.value;
    });
  });

  document.addEventListener("htmx:afterSwap", function (e) {
    if (!isDeckTarget(e.target)) return;
    GROUP_PICKERS.forEach(function (id) {
      var el = document.getElementById(id);
      if (el && pickerValues[id] && el.querySelector('option[value="' + pickerValues[id] + '"]')) {
        el.value = pickerValues[id];
      }
    });
    if (stash) {
      stash.forEach(function (tr) {
        var row = document.getElementById(tr.dataset.forRow) ||
          $("#deck tr.exp-row[data-exp-id='" + tr.dataset.expId + "']");
        if (!row || document.getElementById(row.dataset.detailId) && row.dataset.detailId !== tr.id) return;
        if (document.getElementById(tr.id)) return;
        tr.dataset.forRow = row.id;
        tr.id = row.dataset.detailId;
        tr.firstElementChild.colSpan = row.cells.length;
        row.after(tr);
        var link = expandLink(row);
        if (link) link.setAttribute("aria-expanded", "true");
      });
      stash = null;
    }
    renderSelection();
  });

  document.addEventListener("htmx:responseError", function (e) {
    var xhr = e.detail.xhr;
    toast("The server answered " + xhr.status + " " + (xhr.statusText || "") + ": nothing was shown. Reload the page if this keeps happening.");
  });
  document.addEventListener("htmx:sendError", function () {
    toast("SkyDeck could not be reached. Check your connection; the page retries by itself.");
  });

  // --- relative times ----------------------------------------------------------------------------
  function ago(date) {
    var s = (Date.now() - date.getTime()) / 1000;
    var future = s < 0;
    s = Math.abs(s);
    var text;
    if (s < 60) text = Math.floor(s) + " s";
    else if (s < 3600) text = Math.floor(s / 60) + " min";
    else if (s < 172800) text = Math.floor(s / 3600) + " h";
    else text = Math.floor(s / 86400) + " d";
    return future ? "in " + text : text + " ago";
  }
  setInterval(function () {
    if (document.visibilityState !== "visible") return;
    $all("time[data-rel]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) t.textContent = ago(d);
    });
  }, 10000);

  document.addEventListener("DOMContentLoaded", renderSelection);
})();
