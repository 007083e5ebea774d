// Tests of web/emo_preview.js (run: node --test tests/web/; tests/nodes/test_web.py runs them
// under pytest when Node.js is installed).
import assert from "node:assert/strict";
import test from "node:test";

import {
  attachHoverSound,
  captionText,
  createVideoPreview,
  formatDuration,
  previewUrl,
  readoutText,
  videoMime,
  viewQuery,
} from "../../web/emo_preview.js";
import { FakeElement, fakeDocument } from "./fake_dom.mjs";

const entry = {
  filename: "talk_00001.mp4",
  subfolder: "EMO",
  type: "output",
  format: "video/h264-mp4",
  frame_rate: 25,
  frame_count: 80,
  has_audio: true,
};

test("view URL points at ComfyUI's /view with the file's folder and type", () => {
  assert.equal(viewQuery(entry), "filename=talk_00001.mp4&subfolder=EMO&type=output");
  assert.equal(
    previewUrl({ filename: "a b.webm", subfolder: "", type: "temp" }, (p) => "/api" + p, 7),
    "/api/view?filename=a+b.webm&subfolder=&type=temp&timestamp=7",
  );
});

test("mime types and durations", () => {
  assert.equal(videoMime("video/h264-mp4"), "video/mp4");
  assert.equal(videoMime("video/webm"), "video/webm");
  assert.equal(videoMime(undefined), "video/mp4");
  assert.equal(formatDuration(3.2), "3.2 s");
  assert.equal(formatDuration(75.5), "1:15.5");
  assert.equal(formatDuration(61), "1:01.0");
  assert.equal(formatDuration(NaN), "?");
});

test("readout shows duration, frames, fps and clips", () => {
  assert.equal(readoutText({ seconds: 3.2, frames: 80, fps: 25 }), "3.2 s · 80 frames @ 25 fps");
  assert.equal(
    readoutText({ seconds: 0.6, frames: 15, fps: 25, clips: 2, running: true }),
    "sampling: 0.6 s · 15 frames @ 25 fps · 2 clips",
  );
  assert.equal(readoutText({ seconds: 0.4, frames: 12, fps: 29.97, clips: 1 }), "0.4 s · 12 frames @ 29.97 fps · 1 clip");
  assert.equal(readoutText(undefined), "");
  assert.equal(
    readoutText({ seconds: 0.6, frames: 15, fps: 25, clips: 2, warning: "trained at 64 px" }),
    "0.6 s · 15 frames @ 25 fps · 2 clips\n⚠ trained at 64 px",
  );
});

test("caption under the video", () => {
  assert.equal(captionText(entry), "80 frames · 25 fps · 3.2 s · hover for sound");
  assert.equal(captionText({ ...entry, has_audio: false }), "80 frames · 25 fps · 3.2 s · no audio");
});

test("sound is muted until the pointer is over the preview", () => {
  const video = new FakeElement("video");
  const detach = attachHoverSound(video);
  assert.equal(video.muted, true);
  video.dispatch("pointerenter");
  assert.equal(video.muted, false);
  video.dispatch("pointerleave");
  assert.equal(video.muted, true);
  video.dispatch("pointerenter");
  detach();
  assert.equal(video.muted, true);
  video.dispatch("pointerenter");
  assert.equal(video.muted, true, "no listener left after detach");
});

test("preview element plays a result silently and learns its aspect ratio", () => {
  const preview = createVideoPreview(fakeDocument);
  assert.equal(preview.element.children.length, 2);
  assert.equal(preview.video.loop, true);
  assert.equal(preview.video.autoplay, true);
  preview.show(entry, "/view?x");
  assert.equal(preview.video.src, "/view?x");
  assert.equal(preview.video.attributes.type, "video/mp4");
  assert.equal(preview.video.muted, true);
  assert.equal(preview.video.played, 1);
  assert.match(preview.caption.textContent, /80 frames/);
  preview.element.dispatch("pointerenter"); // hovering the node's preview, video or caption
  assert.equal(preview.video.muted, false);
  preview.video.videoWidth = 640;
  preview.video.videoHeight = 480;
  preview.video.dispatch("loadedmetadata");
  assert.equal(preview.aspect, 640 / 480);
  preview.show({ ...entry, filename: "next.mp4" }, "/view?y");
  assert.equal(preview.video.muted, true, "a new result starts muted");
});
