// Lay2Story: what the layout editor needs from the graph around it, read from LiteGraph nodes (no ComfyUI import;
// unit-tested with plain objects in tests/web/box_canvas.test.mjs).
//  - readStory(editor): the story connected to the editor's `story` input, read from the Story node's widgets (and
//    the chain of Character nodes feeding its cast) while editing: {characters, prompts, width, height, dialogue?},
//    or null when it cannot be known before a run.
//  - runImageSinks(editor): the image-output nodes (SaveImage, PreviewImage, ...) fed by a sampler downstream of
//    the editor, whose run outputs the editor shows behind its boxes.

const PASS_THROUGH = { L2S_LayoutToggle: "story", L2S_LayoutEditor: "story" }; // nodes whose story output is their input's
const SAMPLER = "L2S_StorySampler";
const CHARACTER = "L2S_Character"; // one character; its `cast` input chains the characters before it
const MAX_DEPTH = 8;
const MAX_CAST = 256;

function widgetValue(node, name) {
  return node.widgets?.find((w) => w.name === name)?.value;
}

function getLink(graph, id) {
  if (id === null || id === undefined || !graph) return null;
  const links = graph.links ?? graph._links;
  return (typeof links?.get === "function" ? links.get(id) : links?.[id]) ?? null;
}

function getNode(graph, id) {
  return graph?.getNodeById?.(id) ?? graph?._nodes_by_id?.[id] ?? (graph?.nodes ?? []).find((n) => n.id === id) ?? null;
}

/** The node feeding input `name` of `node`, or null. */
export function inputNode(node, name) {
  const slot = (node.inputs ?? []).findIndex((i) => i.name === name);
  if (slot < 0 || node.inputs[slot].link === null || node.inputs[slot].link === undefined) return null;
  const link = getLink(node.graph, node.inputs[slot].link);
  return link ? getNode(node.graph, link.origin_id) : null;
}

/** The nodes fed by output `slot` of `node`. */
export function outputNodes(node, slot) {
  const links = node.outputs?.[slot]?.links ?? [];
  return links.map((id) => getLink(node.graph, id)).filter(Boolean).map((l) => getNode(node.graph, l.target_id)).filter(Boolean);
}

function frameLines(text) {
  return String(text ?? "").split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
}

/**
 * The character ids of the cast feeding `node`'s `cast` input, in story order (the chain's first Character first),
 * [] when nothing is connected, or null when the chain has a node that is not a Character (unknown before a run).
 */
export function castIds(node) {
  const ids = [];
  const seen = new Set();
  let current = inputNode(node, "cast");
  while (current) {
    if (current.type !== CHARACTER || seen.has(current) || seen.size >= MAX_CAST) return null;
    seen.add(current);
    ids.push(String(widgetValue(current, "character_id") ?? "").trim());
    current = inputNode(current, "cast");
  }
  return ids.reverse();
}

/** The story a story-making node builds, from its widgets (L2S_Story, L2S_StoryFromJSON); null for others. */
export function storyFromNode(node) {
  if (node.type === "L2S_Story") {
    const cast = castIds(node);
    if (cast === null) return null;
    const id = String(widgetValue(node, "character_id") ?? "hero").trim() || "hero";
    return { characters: cast.length ? cast : [id], prompts: frameLines(widgetValue(node, "frame_prompts")),
      width: Number(widgetValue(node, "width")) || null, height: Number(widgetValue(node, "height")) || null };
  }
  if (node.type === "L2S_StoryFromJSON") {
    try {
      const data = JSON.parse(String(widgetValue(node, "story_json") ?? ""));
      const characters = (data.characters ?? []).map((c) => c?.id).filter((c) => typeof c === "string");
      const prompts = (data.frames ?? []).map((f) => (typeof f?.prompt === "string" ? f.prompt : ""));
      const dialogue = (data.frames ?? []).map((f) => (Array.isArray(f?.dialogue) ? f.dialogue : []));
      return { characters, prompts, width: Number(data.width) || null, height: Number(data.height) || null,
        dialogue };
    } catch {
      return null; // the node itself reports bad JSON when run
    }
  }
  return null;
}

/** The story connected to `editor`'s story input (through layout toggles and other editors), or null. */
export function readStory(editor) {
  let node = inputNode(editor, "story");
  for (let depth = 0; node && depth < MAX_DEPTH; depth++) {
    if (PASS_THROUGH[node.type]) {
      node = inputNode(node, PASS_THROUGH[node.type]);
      continue;
    }
    return storyFromNode(node);
  }
  return null;
}

/** Image-output nodes (not Lay2Story's own drawing nodes) fed by the IMAGE output of a sampler downstream. */
export function runImageSinks(editor) {
  const sinks = [];
  const seen = new Set([editor.id]);
  let layer = [editor];
  for (let depth = 0; layer.length && depth < MAX_DEPTH; depth++) {
    const next = [];
    for (const node of layer) {
      for (let slot = 0; slot < (node.outputs?.length ?? 0); slot++) {
        for (const target of outputNodes(node, slot)) {
          if (seen.has(target.id)) continue;
          seen.add(target.id);
          if (target.type === SAMPLER) {
            for (const sink of outputNodes(target, 0)) if (!String(sink.type).startsWith("L2S_")) sinks.push(sink);
          } else next.push(target);
        }
      }
    }
    layer = next;
  }
  return sinks;
}
