// Pure helpers of the EMO web extension (no ComfyUI imports), so they run under `node --test`
// (tests/web/). web/emo.js wires them into ComfyUI's node UI.

/** Query string of ComfyUI's /view endpoint for a saved file entry {filename, subfolder, type}. */
export function viewQuery(entry, timestamp = null) {
  const params = new URLSearchParams({
    filename: entry.filename,
    subfolder: entry.subfolder ?? "",
    type: entry.type ?? "output",
  });
  if (timestamp !== null) params.set("timestamp", String(timestamp)); // defeats the browser cache
  return params.toString();
}

/** URL of a VideoCombine result; apiURL is ComfyUI's api.apiURL (adds the server prefix). */
export function previewUrl(entry, apiURL = (path) => path, timestamp = null) {
  return apiURL("/view?" + viewQuery(entry, timestamp));
}

/** MIME type of a VideoCombine format ("video/h264-mp4" -> "video/mp4"). */
export function videoMime(format) {
  if (typeof format !== "string") return "video/mp4";
  if (format.endsWith("webm")) return "video/webm";
  return "video/mp4";
}

/** 75.5 -> "1:15.5", 3.2 -> "3.2 s". */
export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  if (seconds < 60) return `${Number(seconds.toFixed(2))} s`;
  const minutes = Math.floor(seconds / 60);
  const rest = seconds - minutes * 60;
  const restText = rest.toFixed(1).padStart(4, "0");
  return `${minutes}:${restText}`;
}

/**
 * The readout on AudioEncode / EMOSampler: {seconds, frames, fps, clips?, running?, warning?};
 * a warning (e.g. a size the model was not trained at) goes on a second line.
 */
export function readoutText(data) {
  if (!data) return "";
  const parts = [formatDuration(data.seconds), `${data.frames} frames @ ${Number(data.fps.toFixed(3))} fps`];
  if (data.clips !== undefined) parts.push(`${data.clips} clip${data.clips === 1 ? "" : "s"}`);
  let text = parts.join(" · ");
  if (data.running) text = "sampling: " + text;
  if (data.warning) text += "\n⚠ " + data.warning;
  return text;
}

/** Caption under the video: "80 frames · 25 fps · 3.2 s · sound". */
export function captionText(entry) {
  const parts = [];
  if (entry.frame_count !== undefined) parts.push(`${entry.frame_count} frames`);
  if (entry.frame_rate !== undefined) parts.push(`${Number(entry.frame_rate.toFixed(3))} fps`);
  if (entry.frame_count !== undefined && entry.frame_rate) {
    parts.push(formatDuration(entry.frame_count / entry.frame_rate));
  }
  parts.push(entry.has_audio ? "hover for sound" : "no audio");
  return parts.join(" · ");
}

/**
 * Mute a video until the pointer is over it (as VideoHelperSuite does): previews autoplay
 * silently in a busy graph, and sound plays only for the one you point at.
 * Returns a function that removes the listeners.
 */
export function attachHoverSound(video, target = video) {
  video.muted = true;
  const unmute = () => {
    video.muted = false;
  };
  const mute = () => {
    video.muted = true;
  };
  target.addEventListener("pointerenter", unmute);
  target.addEventListener("pointerleave", mute);
  return () => {
    target.removeEventListener("pointerenter", unmute);
    target.removeEventListener("pointerleave", mute);
    video.muted = true;
  };
}

/**
 * Build the preview element: <div class="emo-preview"><video/><div class="emo-caption"/></div>.
 * doc is `document` (a stand-in in tests). Returns {element, video, caption, show(entry, url)}.
 */
export function createVideoPreview(doc) {
  const element = doc.createElement("div");
  element.className = "emo-preview";
  element.style.width = "100%";
  const video = doc.createElement("video");
  video.loop = true;
  video.autoplay = true;
  video.controls = false;
  video.playsInline = true;
  video.style.width = "100%";
  const caption = doc.createElement("div");
  caption.className = "emo-caption";
  caption.style.fontSize = "11px";
  caption.style.opacity = "0.8";
  caption.style.textAlign = "center";
  element.appendChild(video);
  element.appendChild(caption);
  const detach = attachHoverSound(video, element);
  const preview = {
    element,
    video,
    caption,
    aspect: 1,
    detach,
    show(entry, url) {
      video.src = url;
      video.setAttribute?.("type", videoMime(entry.format));
      caption.textContent = captionText(entry);
      element.hidden = false;
      video.muted = true; // a new result starts silent, like the first one
      video.play?.()?.catch?.(() => {}); // autoplay may be refused until the page was clicked
    },
  };
  video.addEventListener("loadedmetadata", () => {
    if (video.videoWidth > 0 && video.videoHeight > 0) preview.aspect = video.videoWidth / video.videoHeight;
  });
  return preview;
}
