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
    if (label) {
      // say which ones: a bulk action must never act on rows the user forgot are ticked
      var names = boxes().filter(function (b) { return b.checked; }).map(function (b) {
        var link = b.closest("tr") && b.closest("tr").querySelector("a.exp-name");
        return link ? link.textContent.trim() : b.value;
      });
      var text = "No experiments selected";
      if (count) {
        text = count + " selected: " + names.slice(0, 3).join(", ");
        if (count > 3) text += " and " + (count - 3) + " more";
      }
      label.textContent = text;
      label.title = names.join("\n");
    }
    var bar = document.getElementById("bulk-form");
    if (bar) {
      bar.classList.toggle("has-selection", count > 0);
      $all('button[name="action"]', bar).forEach(function (b) { b.disabled = count === 0; });
    }
    renderCompare();
  }

  // --- compare: the bulk bar's Compare button opens /compare?e=<the ticked rows' names> -------
  var COMPARE_MIN = 2, COMPARE_MAX = 20;
  function compareNames() {
    var names = [];
    boxes().forEach(function (b) {
      if (!b.checked) return;
      var link = b.closest("tr") && b.closest("tr").querySelector("a.exp-name");
      var name = link ? link.textContent.trim() : "";
      if (name && names.indexOf(name) < 0) names.push(name); // a row shown in two groups is one
    });
    return names;
  }
  function renderCompare() {
    var button = document.querySelector("#bulk-form [data-compare-url]");
    if (!button) return;
    var n = compareNames().length;
    var ok = n >= COMPARE_MIN && n <= COMPARE_MAX;
    button.disabled = !ok;
    button.title = ok ? "Compare the " + n + " selected experiments side by side"
      : n > COMPARE_MAX ? "Compare at most " + COMPARE_MAX + " experiments (" + n + " selected)"
      : "Select " + COMPARE_MIN + " to " + COMPARE_MAX + " experiments to compare";
  }
  document.addEventListener("click", function (e) {
    var button = e.target.closest && e.target.closest("#bulk-form [data-compare-url]");
    if (!button || button.disabled) return;
    e.preventDefault();
    var names = compareNames();
    if (names.length < COMPARE_MIN || names.length > COMPARE_MAX) return;
    window.location.assign(button.dataset.compareUrl + "?e=" + names.map(encodeURIComponent).join(","));
  });
  // --- end compare ---------------------------------------------------------------------------

  // shift-click ticks (or clears) every box between the last one clicked and this one, in one table
  var anchor = null; // {value, table} of the last box clicked without shift
  function anchorBox(table) {
    if (!anchor || anchor.table !== table.id) return null;
    return $all('input[name="ids"]', table).filter(function (b) { return b.value === anchor.value; })[0] || null;
  }
  document.addEventListener("click", function (e) {
    var el = e.target;
    if (!(el.matches && el.matches('#deck input[name="ids"]'))) return;
    var table = el.closest("table");
    var from = e.shiftKey && table ? anchorBox(table) : null;
    if (from && from !== el) {
      var inTable = $all('input[name="ids"]', table);
      var a = inTable.indexOf(from), b = inTable.indexOf(el);
      inTable.slice(Math.min(a, b), Math.max(a, b) + 1).forEach(function (box) {
        if (el.checked) selected.add(box.value); else selected.delete(box.value);
      });
      var textSel = window.getSelection && window.getSelection();
      if (textSel) textSel.removeAllRanges();
    }
    anchor = table ? { value: el.value, table: table.id } : null;
  });

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
    // Start / Stop / Adopt / Cancel / Resume: load the confirmation into #confirm-dialog first
    var confirmer = e.target.closest && e.target.closest("[data-confirm-url]");
    if (confirmer && !(e.metaKey || e.ctrlKey || e.shiftKey || e.altKey || e.button > 0)) {
      e.preventDefault();
      openConfirm(confirmer);
      return;
    }
    // Duplicate / Delete in an expanded row: posted from #af (outside the deck), since the deck's
    // swap takes the detail rows out of the page first and htmx then looks for the out-of-band
    // targets (header, pickers) in the detached row instead of the page
    var deckAction = e.target.closest && e.target.closest("[data-deck-action]");
    if (deckAction) {
      e.preventDefault();
      if (deckAction.dataset.confirm && !window.confirm(deckAction.dataset.confirm)) return;
      htmx.ajax("POST", deckAction.dataset.deckAction, {
        source: document.getElementById("af"), target: "#deck", swap: "outerHTML"
      });
      return;
    }
    // a group's column chooser: ↑/↓ move a flag within the list (its order is the columns')
    var mover = e.target.closest && e.target.closest("[data-move-column]");
    if (mover) {
      var item = mover.closest("[data-column]");
      var sibling = mover.dataset.moveColumn === "up" ? item.previousElementSibling : item.nextElementSibling;
      if (sibling) {
        if (mover.dataset.moveColumn === "up") sibling.before(item); else sibling.after(item);
        mover.focus();
      }
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
        if (opener.dataset.dialogGroup !== undefined) {
          var picker = dialog.querySelector('select[name="group"]');
          if (picker) picker.value = opener.dataset.dialogGroup;
        }
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

    // a group's "Copy commands": fetch the plain-text list, then copy it
    var copyUrl = e.target.closest && e.target.closest("a[data-copy-url]");
    if (copyUrl && !(e.metaKey || e.ctrlKey || e.shiftKey || e.altKey || e.button > 0)) {
      e.preventDefault();
      copyCommands(copyUrl);
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

  // --- confirmations ------------------------------------------------------------------------
  // The server answers a confirmation request with the dialog's content (HX-Retarget
  // #confirm-dialog); the dialog opens when it arrives, and closes once its form has been sent.
  var confirmOpener = null;
  function confirmDialog() { return document.getElementById("confirm-dialog"); }
  function openConfirm(opener) {
    var dialog = confirmDialog();
    if (!dialog || !window.htmx) return;
    confirmOpener = opener;
    htmx.ajax("GET", opener.getAttribute("data-confirm-url"), { target: "#confirm-dialog", swap: "innerHTML", source: opener });
  }
  function showConfirm() {
    var dialog = confirmDialog();
    if (!dialog) return;
    if (!dialog.open) {
      if (dialog.showModal) dialog.showModal(); else dialog.setAttribute("open", "");
    }
    var first = dialog.querySelector("[autofocus]") || dialog.querySelector("button");
    if (first) first.focus();
  }
  document.addEventListener("htmx:afterSwap", function (e) {
    if (e.target && e.target.id === "confirm-dialog") showConfirm();
  });
  document.addEventListener("htmx:afterRequest", function (e) {
    var elt = e.detail.elt;
    var dialog = elt && elt.closest && elt.closest("dialog#confirm-dialog");
    if (dialog && elt.matches("form[data-confirm-form]") && dialog.open) dialog.close();
  });
  document.addEventListener("close", function (e) {
    if (e.target.id !== "confirm-dialog") return;
    var opener = confirmOpener;
    confirmOpener = null;
    if (opener && opener.isConnected) opener.focus();
  }, true);

  function copyCommands(link) {
    var label = link.dataset.copyLabel || "this group";
    var text = fetch(link.getAttribute("href"), { credentials: "same-origin", headers: { "Accept": "text/plain" } })
      .then(function (r) {
        if (r.redirected) throw new Error("your session has ended; reload the page and sign in.");
        if (!r.ok) throw new Error("the server answered " + r.status + ".");
        return r.text();
      });
    var count = function (t) { return t.split("\n").filter(function (l) { return l && l.charAt(0) !== "#"; }).length; };
    var copied = function (t) {
      var n = count(t);
      toast(n ? "Copied " + n + " command" + (n === 1 ? "" : "s") + " of " + label + "." : "No command to copy in " + label + ".");
    };
    var manual = function (t) {
      var dialog = document.getElementById("copy-dialog");
      var area = document.getElementById("copy-text");
      if (!dialog || !area || !dialog.showModal) return;
      area.value = t;
      dialog.showModal();
      area.focus();
      area.select();
    };
    if (navigator.clipboard && window.isSecureContext && window.ClipboardItem) {
      // write() takes the pending text, so the click still counts as the user's gesture
      var blob = text.then(function (t) { return new Blob([t], { type: "text/plain" }); });
      navigator.clipboard.write([new ClipboardItem({ "text/plain": blob })])
        .then(function () { return text.then(copied); })
        .catch(function () {
          text.then(manual, function (err) { toast("Commands of " + label + " not copied: " + err.message); });
        });
    } else {
      text.then(function (t) {
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(t).then(function () { copied(t); }, function () { manual(t); });
        } else { manual(t); }
      }, function (err) { toast("Commands of " + label + " not copied: " + err.message); });
    }
  }

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
  // Polls (hx-trigger "every Ns") carry no triggering event; data-poll-gate holds them back while
  // the tab is hidden ("visible") or an edit is under way in the deck ("deck-idle"). This is done
  // here, not with an hx-trigger filter, because filters need eval and the CSP forbids it.
  document.addEventListener("htmx:confirm", function (e) {
    var gate = e.detail.elt.getAttribute && e.detail.elt.getAttribute("data-poll-gate");
    if (!gate || e.detail.triggeringEvent) return;
    if (document.visibilityState !== "visible" || (gate === "deck-idle" && !SkyDeck.deckIdle())) {
      e.preventDefault();
    }
  });

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
  // a bulk action done (from the bar, or its confirmation): the selection has served
  document.addEventListener("htmx:afterRequest", function (e) {
    var bar = document.getElementById("bulk-form");
    var config = e.detail.requestConfig;
    if (!bar || !config || config.verb !== "post" || !e.detail.successful) return;
    if (config.path.split("?")[0] !== bar.getAttribute("hx-post")) return;
    selected.clear();
    renderSelection();
  });
  document.addEventListener("htmx:afterRequest", function (e) {
    if (e.detail.xhr && e.detail.xhr.skydeckAction) {
      e.detail.xhr.skydeckAction = false;
      pendingDeckActions = Math.max(0, pendingDeckActions - 1);
    }
  });

  // Every deck request says how many rows each loaded section shows and the layout they line
  // up under ("12:50:<layout>,u:80:<layout>"): sections it re-renders keep them (nothing
  // shrinks by itself), a section whose rows alone changed gets just those rows; sections not
  // loaded stay placeholders.
  // (Not for a new search: that is a new deck, and its URL is pushed to the address bar.)
  document.addEventListener("htmx:configRequest", function (e) {
    if (!isDeckTarget(e.detail.target)) return;
    if (e.detail.verb === "get" && e.detail.elt.id !== "deck-poll") return;
    e.detail.parameters.shown = $all("#deck section.group[data-built]").map(function (s) {
      return s.dataset.key + ":" + $all("tr.exp-row", s).length + ":" + (s.dataset.layout || "");
    }).join(",");
  });

  function stashDetails(root) {
    // keep open detail rows (and whatever is typed in their editors) across a swap
    var rows = $all("tr.detail-row", root).map(function (tr) { tr.remove(); return tr; });
    stash = (stash || []).concat(rows);
  }

  function restoreDetails() {
    if (!stash) return;
    stash.forEach(function (tr) {
      var row = document.getElementById(tr.dataset.forRow) ||
        $("#deck tr.exp-row[data-exp-id='" + tr.dataset.expId + "']");
      if (!row) return;
      if (document.getElementById(row.dataset.detailId) && row.dataset.detailId !== tr.id) return;
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

  document.addEventListener("htmx:beforeSwap", function (e) {
    if (!isDeckTarget(e.detail.target) || !e.detail.shouldSwap) return;
    var xhr = e.detail.xhr;
    var isAction = xhr.skydeckAction;
    // a refresh that was overtaken by a change (or a newer refresh) would show old state
    if (!isAction && (pendingDeckActions > 0 || (xhr.skydeckSeq || 0) < lastAppliedSeq)) {
      e.detail.shouldSwap = false;
      return;
    }
    lastAppliedSeq = Math.max(lastAppliedSeq, xhr.skydeckSeq || 0);
    // the header, or the sections that changed: swapped out of band (see htmx:oobBeforeSwap)
    if (xhr.getResponseHeader("HX-Reswap") === "none") return;
    stashDetails(document.getElementById("deck"));
  });

  // a poll's changed section replaces the old one: its open detail rows move to the new rows
  document.addEventListener("htmx:oobBeforeSwap", function (e) {
    var target = e.detail.target;
    if (target && target.matches && target.matches("#deck section.group")) stashDetails(target);
    // the group pickers outside the deck get fresh options out of band (after every action and
    // changed poll): new options must never change what the user chose
    if (target && GROUP_PICKERS.indexOf(target.id) >= 0) pickerValues[target.id] = target.value;
  });
  document.addEventListener("htmx:oobAfterSwap", function (e) {
    // (htmx fires this on the elements of the main swap, once each: detail.target is the picker)
    var picker = e.detail && e.detail.target;
    if (picker && GROUP_PICKERS.indexOf(picker.id) >= 0 && picker.id in pickerValues) {
      var kept = pickerValues[picker.id];
      var still = $all("option", picker).some(function (o) { return o.value === kept; });
      picker.value = still ? kept : "";
      return;
    }
    if (e.target && e.target.matches && e.target.matches("section.group")) {
      restoreDetails();
      renderSelection();
    } else if (e.target && e.target.matches && e.target.matches("#deck tr.exp-row")) {
      // a poll's changed row: its open detail row (a sibling) stayed where it was
      var detail = document.getElementById(e.target.dataset.detailId);
      var link = expandLink(e.target);
      if (detail && link) {
        link.setAttribute("aria-expanded", "true");
        detail.firstElementChild.colSpan = e.target.cells.length;
      }
      renderSelection();
    }
  });
  // a section or rows loaded as they scrolled into view: tick the boxes of selected ones
  document.addEventListener("htmx:load", function (e) {
    var elt = e.detail.elt;
    if (elt && elt.matches && elt.matches("#deck section.group, #deck tr.exp-row")) renderSelection();
  });

  document.addEventListener("htmx:afterSwap", function (e) {
    if (!isDeckTarget(e.target)) return;
    restoreDetails();
    renderSelection();
  });

  document.addEventListener("htmx:responseError", function (e) {
    var xhr = e.detail.xhr;
    var type = xhr.getResponseHeader("Content-Type") || "";
    if (xhr.status === 403 && type.indexOf("text/plain") === 0 && xhr.responseText) {
      toast(xhr.responseText);
      return;
    }
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
  // --- drag and drop: rows within their group, groups by their header (issue 17) ---------------
  // The ↑/↓ buttons stay the keyboard's way; a drop posts "before" or "after" the row (or group)
  // it lands on, from #af, and the deck comes back in its new order.
  var dragging = null; // {handle, kind: "row"|"group", el}
  function dropTarget(e) {
    if (!dragging) return null;
    var el = dragging.kind === "row"
      ? e.target.closest && e.target.closest("#deck tr.exp-row")
      : e.target.closest && e.target.closest("#deck section.group[data-group-id]:not([data-group-id=''])");
    if (!el || el === dragging.el) return null;
    if (dragging.kind === "row" && el.closest("section") !== dragging.el.closest("section")) return null;
    return el;
  }
  function clearDropMarks() {
    $all(".drop-before, .drop-after").forEach(function (x) { x.classList.remove("drop-before", "drop-after"); });
  }
  document.addEventListener("dragstart", function (e) {
    var handle = e.target.closest && e.target.closest("#deck .drag-handle");
    if (!handle) return;
    var isGroup = handle.classList.contains("group-handle");
    dragging = { handle: handle, kind: isGroup ? "group" : "row", el: handle.closest(isGroup ? "section.group" : "tr.exp-row") };
    dragging.el.classList.add("is-dragging");
    e.dataTransfer.effectAllowed = "move";
    e.dataTransfer.setData("text/plain", dragging.el.id);
  });
  document.addEventListener("dragover", function (e) {
    var el = dropTarget(e);
    if (!el) return;
    e.preventDefault();
    var box = el.getBoundingClientRect();
    var after = e.clientY > box.top + box.height / 2;
    clearDropMarks();
    el.classList.add(after ? "drop-after" : "drop-before");
  });
  document.addEventListener("drop", function (e) {
    var el = dropTarget(e);
    if (!el) return;
    e.preventDefault();
    var side = el.classList.contains("drop-after") ? "after" : "before";
    var id = dragging.kind === "row" ? el.dataset.expId : el.dataset.groupId;
    var values = {};
    values[side] = id;
    htmx.ajax("POST", dragging.handle.dataset.placeUrl, {
      source: document.getElementById("af"), values: values, target: "#deck", swap: "outerHTML"
    });
  });
  document.addEventListener("dragend", function () {
    if (dragging) dragging.el.classList.remove("is-dragging");
    dragging = null;
    clearDropMarks();
  });
})();

/* --- job log viewer (templates/experiments/job_log.html) ----------------------------------------
   Fills a <pre> from the Server-Sent Events of /jobs/<id>/logs/stream. Log lines are untrusted:
   they only ever become text nodes. Auto-scrolls while the reader is at the bottom. */
(function () {
  "use strict";

  var MAX_LINES = 50000;   // older lines are dropped from the page beyond this
  var BOTTOM_SLACK = 24;   // px from the bottom that still counts as "at the bottom"

  function LogViewer(root) {
    this.root = root;
    this.out = root.querySelector("[data-log-output]");
    this.statusEl = root.querySelector("[data-log-status]");
    this.stopBtn = root.querySelector("[data-log-stop]");
    this.scrollNote = root.querySelector("[data-log-scroll]");
    this.tailSel = root.querySelector("[data-log-tail]");
    this.textLink = root.querySelector("[data-log-text]");
    this.url = root.getAttribute("data-stream-url");
    this.source = null;
    this.chunks = [];      // [text node, line count], oldest first
    this.lineCount = 0;
    this.gotEvent = false;
    var self = this;
    this.out.addEventListener("scroll", function () {
      if (self.scrollNote) self.scrollNote.hidden = self.atBottom();
    });
    this.stopBtn.hidden = false;
    this.stopBtn.addEventListener("click", function () {
      if (self.source) self.end("stopped.");
      else self.start();
    });
    if (this.tailSel) {
      this.tailSel.addEventListener("change", function () {
        var tail = encodeURIComponent(self.tailSel.value);
        self.url = self.url.replace(/([?&]tail=)[^&]*/, "$1" + tail);
        if (self.textLink) {
          self.textLink.href = self.textLink.getAttribute("href").replace(/([?&]tail=)[^&]*/, "$1" + tail);
        }
        var here = new URL(window.location.href);
        here.searchParams.set("tail", self.tailSel.value);
        window.history.replaceState(null, "", here.toString());
        self.start();
      });
    }
    window.addEventListener("pagehide", function () { self.close(); });
  }

  LogViewer.prototype.atBottom = function () {
    var o = this.out;
    return o.scrollHeight - o.scrollTop - o.clientHeight <= BOTTOM_SLACK;
  };

  LogViewer.prototype.setStatus = function (text, state) {
    this.statusEl.textContent = text;
    this.root.setAttribute("data-state", state);
  };

  LogViewer.prototype.append = function (lines) {
    if (!lines.length) return;
    // Whether to follow is read from where the reader is now, not from the last scroll event:
    // lines arrive faster than scroll events are dispatched.
    var follow = this.atBottom();
    var node = document.createTextNode(lines.join("\n") + "\n");
    this.out.appendChild(node);
    this.chunks.push([node, lines.length]);
    this.lineCount += lines.length;
    while (this.lineCount > MAX_LINES && this.chunks.length > 1) {
      var first = this.chunks.shift();
      this.out.removeChild(first[0]);
      this.lineCount -= first[1];
    }
    if (follow) this.out.scrollTop = this.out.scrollHeight;
  };

  LogViewer.prototype.close = function () {
    if (this.source) {
      this.source.close();
      this.source = null;
    }
    this.stopBtn.textContent = "Restart";
  };

  LogViewer.prototype.end = function (reason, state) {
    this.close();
    this.setStatus("ended: " + reason, state || "ended");
  };

  LogViewer.prototype.start = function () {
    var self = this;
    this.close();
    this.out.textContent = "";
    this.chunks = [];
    this.lineCount = 0;
    this.gotEvent = false;
    if (this.scrollNote) this.scrollNote.hidden = true;
    this.stopBtn.textContent = "Stop";
    this.setStatus("connecting…", "connecting");
    var source = new EventSource(this.url);
    this.source = source;
    source.addEventListener("ready", function (e) {
      self.gotEvent = true;
      var info = JSON.parse(e.data);
      self.setStatus(info.follow ? "following (job " + info.status + ")" : "loading the last " + info.tail + " lines…",
        info.follow ? "following" : "loading");
    });
    source.addEventListener("lines", function (e) {
      self.gotEvent = true;
      self.append(JSON.parse(e.data));
    });
    source.addEventListener("end", function (e) {
      var info = JSON.parse(e.data);
      self.end(info.message, info.outcome === "error" ? "error" : "ended");
    });
    source.onerror = function () {
      if (source !== self.source) return;
      // Never let EventSource reconnect by itself: it would repeat the tail.
      self.close();
      if (self.gotEvent) {
        self.end("the connection to SkyDeck was lost.", "error");
        return;
      }
      // EventSource hides why it failed: ask once more with fetch to show the server's answer.
      self.setStatus("ended: could not connect…", "error");
      var abort = new AbortController();
      fetch(self.url, { signal: abort.signal, headers: { Accept: "text/event-stream" } }).then(function (r) {
        if (r.redirected) {
          abort.abort();
          self.end("you are logged out: reload the page.", "error");
        } else if (!r.ok) {
          return r.text().then(function (t) { self.end(t.trim() || ("HTTP " + r.status), "error"); });
        } else {
          abort.abort();
          self.end("the connection to SkyDeck broke off: press Restart.", "error");
        }
      }).catch(function () {
        if (!abort.signal.aborted) self.end("SkyDeck could not be reached.", "error");
      });
    };
  };

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("[data-log-viewer]"), function (root) {
      var viewer = new LogViewer(root);
      root.skydeckLog = viewer;
      viewer.start();
    });
  });
})();

/* --- live lists: /jobs re-reads its table (templates/experiments/_jobs_live.html) -------------
   The poll (#jobs-poll, data-poll-gate="live-list") asks for the same URL with the version it
   shows; 204 means unchanged. It holds back while auto-refresh is off (remembered in
   localStorage), the tab is hidden, focus is in the filter form, text is selected or a dialog
   is open, and says so. A swap keeps focus (the same link in the new table) and scroll. */
(function () {
  "use strict";

  var STORE_KEY = "skydeck.jobs.autorefresh";
  var lastState = null;

  function box() { return document.querySelector("[data-live-refresh]"); }
  function toggle() { var b = box(); return b && b.querySelector("[data-live-toggle]"); }
  function stamp() {
    var d = new Date();
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
  }
  function say(text, state) {
    var b = box();
    if (!b) return;
    b.querySelector("[data-live-status]").textContent = text;
    b.setAttribute("data-state", state);
    lastState = state;
  }
  function stored() {
    try { return window.localStorage.getItem(STORE_KEY) !== "off"; } catch (err) { return true; }
  }

  /** Why the table must not change now ("" when it may). */
  function busy() {
    var t = toggle();
    if (t && !t.checked) return "off";
    var active = document.activeElement;
    if (active && active.closest && active.closest("form.filters")) return "editing the filters";
    var sel = window.getSelection && window.getSelection();
    if (sel && !sel.isCollapsed && String(sel).length) return "text is selected";
    if (document.querySelector("dialog[open]")) return "a dialog is open";
    return "";
  }

  document.addEventListener("htmx:confirm", function (e) {
    var elt = e.detail.elt;
    if (!elt.getAttribute || elt.getAttribute("data-poll-gate") !== "live-list") return;
    if (e.detail.triggeringEvent) return; // asked for (refresh-jobs): not a poll
    var why = busy();
    if (why === "off") {
      e.preventDefault();
      say("auto-refresh off", "off");
    } else if (why) {
      e.preventDefault();
      say("paused: " + why, "paused");
    }
  });

  var kept = null; // what the swap must give back: focus and the table's scroll
  document.addEventListener("htmx:beforeSwap", function (e) {
    var target = e.detail.target;
    if (!target || target.id !== "jobs-live" || !e.detail.shouldSwap) return;
    var why = busy();
    if (why && why !== "off" && why !== "editing the filters") {
      e.detail.shouldSwap = false; // something started meanwhile: the next poll tries again
      say("paused: " + why, "paused");
      return;
    }
    var active = document.activeElement;
    var wrap = target.querySelector(".table-wrap");
    kept = {
      focus: active && active !== document.body && target.contains(active)
        ? { tag: active.tagName, href: active.getAttribute("href"), text: active.textContent }
        : null,
      left: wrap ? wrap.scrollLeft : 0,
      top: wrap ? wrap.scrollTop : 0,
      x: window.scrollX,
      y: window.scrollY
    };
  });
  document.addEventListener("htmx:afterSwap", function (e) {
    var live = document.getElementById("jobs-live");
    if (!kept || !live || (e.detail.target && e.detail.target.id !== "jobs-live" && e.detail.target !== live)) return;
    var wrap = live.querySelector(".table-wrap");
    if (wrap) { wrap.scrollLeft = kept.left; wrap.scrollTop = kept.top; }
    if (kept.focus) {
      var f = kept.focus;
      var same = Array.prototype.filter.call(live.querySelectorAll(f.tag), function (el) {
        return el.getAttribute("href") === f.href && el.textContent === f.text;
      })[0];
      if (same) same.focus({ preventScroll: true });
    }
    if (window.scrollX !== kept.x || window.scrollY !== kept.y) window.scrollTo(kept.x, kept.y);
    kept = null;
  });
  document.addEventListener("htmx:afterRequest", function (e) {
    var elt = e.detail.elt;
    if (!elt || elt.id !== "jobs-poll") return;
    var xhr = e.detail.xhr;
    if (e.detail.successful || (xhr && xhr.status === 204)) say("updated " + stamp(), "live");
    else say("refresh failed " + stamp() + ": retrying", "error");
  });

  document.addEventListener("DOMContentLoaded", function () {
    var b = box();
    if (!b || !document.getElementById("jobs-poll")) return;
    b.hidden = false;
    var t = toggle();
    t.checked = stored();
    say(t.checked ? "updated " + stamp() : "auto-refresh off", t.checked ? "live" : "off");
    t.addEventListener("change", function () {
      try { window.localStorage.setItem(STORE_KEY, t.checked ? "on" : "off"); } catch (err) { /* private mode */ }
      if (t.checked) {
        say("refreshing…", "live");
        htmx.trigger(document.body, "refresh-jobs");
      } else {
        say("auto-refresh off", "off");
      }
    });
    // a pause ends by itself once its reason does: say so at once, not at the next poll
    function recheck() {
      if (lastState !== "paused" || !box()) return;
      if (!busy()) say("resuming…", "live");
    }
    document.addEventListener("focusout", function () { window.setTimeout(recheck, 0); });
    document.addEventListener("selectionchange", recheck);
  });
})();
/* --- end live lists ----------------------------------------------------------------------- */

/* --- log find and wrap (templates/experiments/job_log.html [data-log-find]) -----------------
   Finds text in the lines shown, case-insensitively, without touching the log's DOM: matches
   are Ranges painted with the CSS Custom Highlight API (the lines stay plain text nodes, which
   the viewer appends to and trims). Enter / Shift+Enter in the box, or n / N elsewhere, go to
   the next / previous match ("3/17"); "/" focuses the box; Esc clears it. New lines are
   searched as they arrive. Wrap is remembered in localStorage. */
(function () {
  "use strict";

  var MAX_MATCHES = 10000;
  var WRAP_KEY = "skydeck.log.wrap";

  function isTyping(el) {
    if (!el) return false;
    var tag = el.tagName;
    if (tag === "TEXTAREA" || tag === "SELECT" || el.isContentEditable) return true;
    return tag === "INPUT" && !/^(checkbox|radio|button|submit|reset)$/i.test(el.type);
  }

  function LogFind(root) {
    var self = this;
    this.out = root.querySelector("[data-log-output]");
    this.box = root.querySelector("[data-log-find]");
    this.input = root.querySelector("[data-log-search]");
    this.countEl = root.querySelector("[data-log-count]");
    this.wrapBox = root.querySelector("[data-log-wrap]");
    this.matches = [];
    this.current = -1;
    this.query = "";
    this.timer = 0;
    this.painted = !!(window.CSS && CSS.highlights && typeof window.Highlight === "function");
    this.box.hidden = false;
    this.input.addEventListener("input", function () { self.search(true); });
    this.input.addEventListener("keydown", function (e) {
      if (e.key === "Enter") { e.preventDefault(); self.go(e.shiftKey ? -1 : 1); }
      else if (e.key === "Escape" && self.input.value) { e.preventDefault(); self.input.value = ""; self.search(true); }
    });
    root.querySelector("[data-log-next]").addEventListener("click", function () { self.go(1); });
    root.querySelector("[data-log-prev]").addEventListener("click", function () { self.go(-1); });
    var wrap = true;
    try { wrap = window.localStorage.getItem(WRAP_KEY) !== "off"; } catch (err) { /* private mode */ }
    this.wrapBox.checked = wrap;
    this.out.classList.toggle("log-nowrap", !wrap);
    this.wrapBox.addEventListener("change", function () {
      self.out.classList.toggle("log-nowrap", !self.wrapBox.checked);
      try { window.localStorage.setItem(WRAP_KEY, self.wrapBox.checked ? "on" : "off"); } catch (err) { /* private mode */ }
      if (self.current >= 0) self.reveal(self.matches[self.current]);
    });
    // lines arrive (and old ones are trimmed) while a search is open: search them too
    new MutationObserver(function () {
      if (!self.query) return;
      window.clearTimeout(self.timer);
      self.timer = window.setTimeout(function () { self.search(false); }, 150);
    }).observe(this.out, { childList: true });
    document.addEventListener("keydown", function (e) {
      if (e.metaKey || e.ctrlKey || e.altKey || isTyping(e.target)) return;
      if (e.key === "/") { e.preventDefault(); self.input.focus(); self.input.select(); }
      else if ((e.key === "n" || e.key === "N") && self.matches.length) {
        e.preventDefault();
        self.go(e.key === "N" ? -1 : 1);
      }
    });
  }

  /** Find the box's text again; ``fresh``: a new query (go to the first match). */
  LogFind.prototype.search = function (fresh) {
    var q = this.input.value.toLowerCase();
    this.query = q;
    var matches = [];
    var truncated = false;
    if (q) {
      var nodes = this.out.childNodes;
      for (var i = 0; i < nodes.length && !truncated; i++) {
        var node = nodes[i];
        if (node.nodeType !== 3) continue;
        var text = node.data.toLowerCase();
        var at = text.indexOf(q);
        while (at >= 0) {
          if (matches.length >= MAX_MATCHES) { truncated = true; break; }
          var range = document.createRange();
          range.setStart(node, at);
          range.setEnd(node, at + q.length);
          matches.push(range);
          at = text.indexOf(q, at + q.length);
        }
      }
    }
    this.matches = matches;
    this.truncated = truncated;
    if (!matches.length) this.current = -1;
    else if (fresh || this.current < 0) this.current = 0;
    else this.current = Math.min(this.current, matches.length - 1);
    this.paint();
    if (fresh && this.current >= 0) this.reveal(matches[this.current]);
  };

  LogFind.prototype.go = function (delta) {
    if (this.query !== this.input.value.toLowerCase()) this.search(true);
    var n = this.matches.length;
    if (!n) return;
    this.current = ((this.current < 0 ? 0 : this.current + delta) % n + n) % n;
    this.paint();
    this.reveal(this.matches[this.current]);
  };

  LogFind.prototype.paint = function () {
    var n = this.matches.length;
    if (!this.query) this.countEl.textContent = "";
    else if (!n) this.countEl.textContent = "0/0";
    else this.countEl.textContent = (this.current + 1) + "/" + n + (this.truncated ? "+" : "");
    this.box.setAttribute("data-found", !this.query ? "" : (n ? "some" : "none"));
    this.countEl.setAttribute("aria-label", !this.query ? "" :
      (n ? "match " + (this.current + 1) + " of " + n : "no match"));
    if (!this.painted) return;
    CSS.highlights.delete("log-match");
    CSS.highlights.delete("log-current");
    if (!n) return;
    var all = new window.Highlight();
    this.matches.forEach(function (range) { all.add(range); });
    CSS.highlights.set("log-match", all);
    CSS.highlights.set("log-current", new window.Highlight(this.matches[this.current]));
  };

  /** Scroll the log (never the page) so the match is in view, a third from the top. */
  LogFind.prototype.reveal = function (range) {
    if (!range) return;
    var rect = range.getBoundingClientRect();
    var box = this.out.getBoundingClientRect();
    if (rect.top < box.top || rect.bottom > box.bottom) {
      this.out.scrollTop += rect.top - box.top - this.out.clientHeight / 3;
    }
    if (rect.left < box.left || rect.right > box.right) {
      this.out.scrollLeft += rect.left - box.left - this.out.clientWidth / 3;
    }
    if (!this.painted) {
      var sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
    }
  };

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("[data-log-viewer]"), function (root) {
      if (root.querySelector("[data-log-find]")) root.skydeckFind = new LogFind(root);
    });
  });
})();
/* --- end log find and wrap ---------------------------------------------------------------- */
