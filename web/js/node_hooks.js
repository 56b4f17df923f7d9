/** Hooks on LiteGraph nodes shared by the pack's extensions (no ComfyUI imports, so unit tests can load it). */

/** Replaces obj[name] by a function that calls the previous one first, then `after`; returns the previous result. */
export function chain(obj, name, after) {
  const previous = obj[name];
  obj[name] = function (...args) {
    const result = previous?.apply(this, args);
    after.apply(this, args);
    return result;
  };
}
