// Atelier page helpers. Extension scripts written for A1111 call these global names, so they keep A1111's names:
// gradioApp, onUiLoaded, onUiUpdate, onAfterUiUpdate, onUiTabChange, get_uiCurrentTab, get_uiCurrentTabContent.
(function () {
    "use strict";

    var uiLoadedCallbacks = [];
    var uiUpdateCallbacks = [];
    var uiAfterUpdateCallbacks = [];
    var uiTabChangeCallbacks = [];
    var loaded = false;
    var currentTab = null;
    var afterUpdateTimer = null;

    window.gradioApp = function () {
        var app = document.getElementsByTagName("gradio-app")[0];
        var root = app && app.shadowRoot ? app.shadowRoot : app;
        return root || document;
    };
    window.onUiLoaded = function (callback) { uiLoadedCallbacks.push(callback); };
    window.onUiUpdate = function (callback) { uiUpdateCallbacks.push(callback); };
    window.onAfterUiUpdate = function (callback) { uiAfterUpdateCallbacks.push(callback); };
    window.onUiTabChange = function (callback) { uiTabChangeCallbacks.push(callback); };

    window.get_uiCurrentTab = function () {
        return gradioApp().querySelector("#tabs > .tab-wrapper button.selected, #tabs button[role='tab'].selected");
    };
    window.get_uiCurrentTabContent = function () {
        var panels = gradioApp().querySelectorAll("#tabs > .tabitem, #tabs > div > [id^='tab_']");
        for (var i = 0; i < panels.length; i++) {
            if (panels[i].offsetParent !== null) return panels[i];
        }
        return null;
    };

    function run(callbacks, argument) {
        for (var i = 0; i < callbacks.length; i++) {
            try {
                callbacks[i](argument);
            } catch (e) {
                console.error("Atelier UI callback failed:", e);
            }
        }
    }

    function applyTooltips() {
        var titles = window.atelierTooltips || {};
        Object.keys(titles).forEach(function (id) {
            var element = gradioApp().querySelector("#" + CSS.escape(id));
            if (element && !element.title) element.title = titles[id];
        });
    }

    function onMutation(mutations) {
        if (!loaded && gradioApp().querySelector("#tab_txt2img")) {
            loaded = true;
            applyTooltips();
            run(uiLoadedCallbacks);
        }
        if (!loaded) return;
        run(uiUpdateCallbacks, mutations);
        clearTimeout(afterUpdateTimer);
        afterUpdateTimer = setTimeout(function () {
            applyTooltips();
            run(uiAfterUpdateCallbacks);
        }, 200);
        var tab = window.get_uiCurrentTab();
        if (tab && tab !== currentTab) {
            currentTab = tab;
            run(uiTabChangeCallbacks);
        }
    }

    // Ctrl+Enter (Cmd+Enter on macOS) in a prompt box clicks that tab's Generate button.
    function onKeyDown(event) {
        if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
        var box = event.target && event.target.closest ? event.target.closest("[id$='_prompt']") : null;
        if (!box) return;
        var tabname = box.id.replace(/_(neg_)?prompt$/, "");
        var button = gradioApp().querySelector("#" + CSS.escape(tabname + "_generate"));
        if (!button) return;
        event.preventDefault();
        button.click();
    }

    document.addEventListener("DOMContentLoaded", function () {
        new MutationObserver(onMutation).observe(gradioApp(), {childList: true, subtree: true});
    });
    document.addEventListener("keydown", onKeyDown, true);
})();
