// ComfyUI front-end extension of the EMO node pack:
// - EMO Video Combine / EMO Sample To Video: play the written video inside the node, muted until
//   the pointer is over it;
// - EMO Audio Encode / EMO Sampler / EMO Sample To Video: a readout of duration, frame count and
//   clips (the samplers show their plan as soon as they start, from the "emo.plan" message, and
//   the result when done), with a warning line when a setting does not suit the model.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { createVideoPreview, previewUrl, readoutText } from "./emo_preview.js";

const VIDEO_NODES = new Set(["EMOVideoCombine", "EMOSampleToVideo"]);
const READOUT_NODES = new Set(["EMOAudioEncode", "EMOSampler", "EMOSampleToVideo"]);
const CAPTION_HEIGHT = 18;

function chainCallback(prototype, name, callback) {
  const original = prototype[name];
  prototype[name] = function (...args) {
    const result = original?.apply(this, args);
    callback.apply(this, args);
    return result;
  };
}

function fitNode(node) {
  node.setSize?.([node.size[0], node.computeSize([node.size[0], node.size[1]])[1]]);
  node.graph?.setDirtyCanvas?.(true, true);
}

function addVideoPreview(node) {
  const preview = createVideoPreview(document);
  preview.element.hidden = true;
  const widget = node.addDOMWidget("emo_video_preview", "emo_preview", preview.element, {
    serialize: false,
    hideOnZoom: false,
  });
  widget.computeSize = function (width) {
    if (preview.element.hidden) return [width, -4];
    return [width, (node.size[0] - 20) / preview.aspect + CAPTION_HEIGHT + 10];
  };
  preview.video.addEventListener("loadedmetadata", () => fitNode(node));
  node.emoPreview = preview;
  return preview;
}

function setReadout(node, text) {
  let widget = node.widgets?.find((w) => w.name === "emo_readout");
  if (!widget) {
    const element = document.createElement("div");
    element.style.fontSize = "11px";
    element.style.opacity = "0.85";
    element.style.padding = "2px 6px";
    element.style.whiteSpace = "pre-wrap";
    widget = node.addDOMWidget("emo_readout", "emo_readout", element, { serialize: false });
    widget.emoElement = element;
  }
  const lines = text.split("\n").length;
  widget.computeSize = (width) => [width, 6 + 16 * lines];
  widget.emoElement.textContent = text;
  widget.emoElement.style.color = text.includes("⚠") ? "#e8b04a" : "";
  fitNode(node);
}

app.registerExtension({
  name: "emo.nodes",

  async setup() {
    api.addEventListener("emo.plan", ({ detail }) => {
      const node = app.graph?.getNodeById?.(Number(detail?.node));
      if (node) setReadout(node, readoutText({ ...detail, running: true }));
    });
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (VIDEO_NODES.has(nodeData.name)) {
      chainCallback(nodeType.prototype, "onNodeCreated", function () {
        addVideoPreview(this);
      });
      chainCallback(nodeType.prototype, "onExecuted", function (message) {
        const entry = message?.gifs?.[0];
        if (!entry) return;
        const preview = this.emoPreview ?? addVideoPreview(this);
        preview.show(entry, previewUrl(entry, (path) => api.apiURL(path), Date.now()));
        fitNode(this);
      });
      chainCallback(nodeType.prototype, "onRemoved", function () {
        this.emoPreview?.detach();
        if (this.emoPreview) this.emoPreview.video.src = "";
      });
    }
    if (READOUT_NODES.has(nodeData.name)) {
      chainCallback(nodeType.prototype, "onExecuted", function (message) {
        const data = message?.emo_readout?.[0];
        if (data) setReadout(this, readoutText(data));
      });
    }
  },
});
