// Tests of web/emo.js, the glue to ComfyUI's front end: it is loaded next to stand-ins of
// ComfyUI's scripts/app.js and scripts/api.js (laid out as ComfyUI serves them: /scripts/ and
// /extensions/<pack>/), then driven the way the front end drives an extension.
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import test from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import { FakeElement } from "./fake_dom.mjs";

const WEB = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "web");

async function loadExtension() {
  const root = mkdtempSync(join(tmpdir(), "emo-web-"));
  mkdirSync(join(root, "scripts"));
  mkdirSync(join(root, "extensions", "ComfyUI-EMO"), { recursive: true });
  writeFileSync(
    join(root, "scripts", "app.js"),
    "export const app = { extensions: [], graph: { nodes: {}, getNodeById(id) { return this.nodes[id]; } }," +
      " registerExtension(e) { this.extensions.push(e); } };\n",
  );
  writeFileSync(
    join(root, "scripts", "api.js"),
    "export const api = { listeners: {}, addEventListener(t, f) { (this.listeners[t] ??= []).push(f); }," +
      " apiURL(p) { return '/api' + p; } };\n",
  );
  for (const file of ["emo.js", "emo_preview.js"]) {
    copyFileSync(join(WEB, file), join(root, "extensions", "ComfyUI-EMO", file));
  }
  globalThis.document = { createElement: (tag) => new FakeElement(tag) };
  await import(pathToFileURL(join(root, "extensions", "ComfyUI-EMO", "emo.js")).href);
  const { app } = await import(pathToFileURL(join(root, "scripts", "app.js")).href);
  const { api } = await import(pathToFileURL(join(root, "scripts", "api.js")).href);
  return { app, api, extension: app.extensions.at(-1) };
}

class FakeNode {
  constructor() {
    this.widgets = [];
    this.size = [340, 200];
  }
  addDOMWidget(name, type, element, options) {
    const widget = { name, type, element, options };
    this.widgets.push(widget);
    return widget;
  }
  computeSize() {
    return [this.size[0], 100 + this.widgets.reduce((h, w) => h + (w.computeSize?.(this.size[0])[1] ?? 0), 0)];
  }
  setSize(size) {
    this.size = size;
  }
}

async function nodeClass(extension, name) {
  const nodeType = function () {};
  nodeType.prototype = Object.create(FakeNode.prototype);
  let executedBefore = 0;
  nodeType.prototype.onExecuted = () => (executedBefore += 1); // the front end's own handler
  await extension.beforeRegisterNodeDef(nodeType, { name });
  const create = () => {
    const node = new nodeType();
    Object.assign(node, new FakeNode());
    node.onNodeCreated?.();
    return node;
  };
  return { create, calls: () => executedBefore };
}

test("VideoCombine shows the written video, muted until hovered", async () => {
  const { extension } = await loadExtension();
  assert.equal(extension.name, "emo.nodes");
  const { create, calls } = await nodeClass(extension, "EMOVideoCombine");
  const node = create();
  const preview = node.emoPreview;
  assert.ok(preview, "a preview widget is added when the node is created");
  assert.equal(preview.element.hidden, true);
  assert.equal(node.widgets[0].computeSize(340)[1], -4, "no space taken before a result");

  node.onExecuted({
    gifs: [{ filename: "talk_00001.mp4", subfolder: "EMO", type: "output", format: "video/h264-mp4",
             frame_rate: 25, frame_count: 50, has_audio: true }],
  });
  assert.equal(calls(), 1, "the front end's own onExecuted still runs");
  assert.match(preview.video.src, /^\/api\/view\?filename=talk_00001\.mp4&subfolder=EMO&type=output&timestamp=\d+$/);
  assert.equal(preview.element.hidden, false);
  assert.equal(preview.video.muted, true);
  preview.element.dispatch("pointerenter");
  assert.equal(preview.video.muted, false);
  preview.element.dispatch("pointerleave");
  assert.equal(preview.video.muted, true);
  preview.video.videoWidth = 200;
  preview.video.videoHeight = 100;
  preview.video.dispatch("loadedmetadata");
  assert.equal(node.widgets[0].computeSize(340)[1], 320 / 2 + 28, "the node grows to the video's shape");
  node.onExecuted({}); // a message without a video changes nothing
  assert.equal(preview.video.src.includes("talk_00001"), true);
});

test("AudioEncode and EMOSampler show a readout; the sampler's plan arrives before it finishes", async () => {
  const { app, api, extension } = await loadExtension();
  await extension.setup();
  const encoder = (await nodeClass(extension, "EMOAudioEncode")).create();
  encoder.onExecuted({ emo_readout: [{ seconds: 3.2, frames: 80, fps: 25 }] });
  assert.equal(encoder.widgets.find((w) => w.name === "emo_readout").emoElement.textContent,
               "3.2 s · 80 frames @ 25 fps");

  const sampler = (await nodeClass(extension, "EMOSampler")).create();
  app.graph.nodes[9] = sampler;
  for (const listener of api.listeners["emo.plan"]) {
    listener({ detail: { node: "9", seconds: 3.2, frames: 80, fps: 25, clips: 7 } });
  }
  const readout = () => sampler.widgets.find((w) => w.name === "emo_readout").emoElement.textContent;
  assert.equal(readout(), "sampling: 3.2 s · 80 frames @ 25 fps · 7 clips");
  sampler.onExecuted({ emo_readout: [{ seconds: 3.2, frames: 80, fps: 25, clips: 7 }] });
  assert.equal(readout(), "3.2 s · 80 frames @ 25 fps · 7 clips");
  assert.equal(sampler.widgets.filter((w) => w.name === "emo_readout").length, 1, "one readout, updated");

  const other = (await nodeClass(extension, "KSampler")).create();
  assert.equal(other.widgets.length, 0, "other nodes are left alone");
});
