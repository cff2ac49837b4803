// Atelier UI translation: applies window.localization ({"English text": "translated text"}, embedded in the page head
// by modules/ui_assets.py when the "localization" setting names a file) to text nodes, placeholders and titles whose
// whole trimmed text is a key, now and whenever the UI adds or changes elements. What users type (input values,
// textareas), generation infotexts and code blocks are never touched. getTranslation(text) (A1111's global name)
// looks up one string.
(function () {
    "use strict";

    var table = window.localization;
    var has = Object.prototype.hasOwnProperty;
    // infotexts quote the user's prompt, so they stay as they are
    var SKIP = "script, style, textarea, code, pre, [contenteditable='true'], [contenteditable=''], .no-translate, " +
        ".infotext-html, [id$='generation_info'], [id^='html_info']";
    var ATTRIBUTES = ["placeholder", "title"];
    var written = new WeakMap(); // node -> what we last wrote there, so our own writes are not translated again

    window.getTranslation = function (text) {
        if (!table || typeof text !== "string") return undefined;
        var key = text.trim();
        return key && has.call(table, key) ? table[key] : undefined;
    };
    if (!table || typeof table !== "object" || !Object.keys(table).length) return;

    function replaced(raw) {
        var translation = window.getTranslation(raw);
        if (translation === undefined) return null;
        var key = raw.trim(), start = raw.indexOf(key);
        return raw.slice(0, start) + translation + raw.slice(start + key.length); // keep the surrounding spaces
    }

    function translateText(node) {
        var parent = node.parentElement;
        if (!parent || written.get(node) === node.nodeValue || parent.closest(SKIP)) return;
        var value = replaced(node.nodeValue);
        if (value === null) return;
        written.set(node, value);
        if (value !== node.nodeValue) node.nodeValue = value;
    }

    function translateAttribute(element, name) {
        var raw = element.getAttribute(name);
        var own = written.get(element) || {};
        if (!raw || own[name] === raw) return;
        var value = replaced(raw);
        if (value === null) return;
        own[name] = value;
        written.set(element, own);
        if (value !== raw) element.setAttribute(name, value);
    }

    function translateElement(element) {
        for (var i = 0; i < ATTRIBUTES.length; i++) {
            if (element.hasAttribute(ATTRIBUTES[i])) translateAttribute(element, ATTRIBUTES[i]);
        }
    }

    function translateTree(root) {
        if (root.nodeType === Node.TEXT_NODE) { translateText(root); return; }
        if (root.nodeType !== Node.ELEMENT_NODE) return;
        translateElement(root);
        var walker = document.createTreeWalker(root, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT);
        for (var node = walker.nextNode(); node; node = walker.nextNode()) {
            if (node.nodeType === Node.TEXT_NODE) translateText(node); else translateElement(node);
        }
    }

    function onMutations(mutations) {
        for (var i = 0; i < mutations.length; i++) {
            var m = mutations[i];
            if (m.type === "childList") {
                for (var j = 0; j < m.addedNodes.length; j++) translateTree(m.addedNodes[j]);
            } else if (m.type === "characterData") {
                translateText(m.target);
            } else if (m.type === "attributes") {
                translateAttribute(m.target, m.attributeName);
            }
        }
    }

    function start() {
        var observer = new MutationObserver(onMutations);
        observer.observe(document.body, {childList: true, subtree: true, characterData: true, attributes: true,
            attributeFilter: ATTRIBUTES});
        translateTree(document.body);
    }

    if (document.body) start(); else document.addEventListener("DOMContentLoaded", start);
})();
