// Lay2Story box editor: the right-click menu (a small DOM list positioned inside the editor, closed by a click
// elsewhere, Escape or choosing an item). Items: {label, action, run, disabled?, colour?}; `action` is kept as
// data-action for tests and scripts.

export class EditorMenu {
  constructor(root) {
    this.root = root;
    this.element = null;
    this.onOutside = (e) => {
      if (this.element && !this.element.contains(e.target)) this.close();
    };
  }

  open(x, y, items) {
    this.close();
    const menu = document.createElement("div");
    menu.className = "l2s-menu";
    Object.assign(menu.style, {
      position: "absolute", zIndex: "10", minWidth: "150px", padding: "3px 0", borderRadius: "5px",
      background: "var(--comfy-menu-bg, #262626)", border: "1px solid var(--border-color, #555)",
      boxShadow: "0 4px 14px rgba(0,0,0,0.5)", font: "12px sans-serif",
    });
    for (const item of items) {
      const entry = document.createElement("div");
      entry.className = "l2s-menu-item";
      entry.dataset.action = item.action;
      entry.textContent = item.label;
      entry.setAttribute("role", "menuitem");
      if (item.disabled) entry.setAttribute("aria-disabled", "true");
      Object.assign(entry.style, {
        padding: "3px 12px", whiteSpace: "nowrap", cursor: item.disabled ? "default" : "pointer",
        color: item.disabled ? "#777" : item.colour ?? "var(--input-text, #ddd)",
      });
      entry.addEventListener("pointerenter", () => {
        if (!item.disabled) entry.style.background = "rgba(255,255,255,0.1)";
      });
      entry.addEventListener("pointerleave", () => (entry.style.background = ""));
      entry.addEventListener("pointerdown", (e) => e.stopPropagation());
      entry.addEventListener("click", (e) => {
        e.stopPropagation();
        if (item.disabled) return;
        this.close();
        item.run();
      });
      menu.append(entry);
    }
    this.root.append(menu);
    // Keep it inside the editor: flip left/up where it would run past the right/bottom edge.
    const w = menu.offsetWidth;
    const h = menu.offsetHeight;
    menu.style.left = `${Math.max(0, Math.min(x, this.root.clientWidth - w - 2))}px`;
    menu.style.top = `${Math.max(0, y + h > this.root.clientHeight ? y - h : y)}px`;
    this.element = menu;
    document.addEventListener("pointerdown", this.onOutside, true);
  }

  close() {
    document.removeEventListener("pointerdown", this.onOutside, true);
    this.element?.remove();
    this.element = null;
  }

  get isOpen() {
    return this.element !== null;
  }
}
