// The smallest DOM the web tests need: elements with listeners, attributes, children, and a
// play() that counts its calls. Shared by emo_preview.test.mjs and emo_extension.test.mjs.
export class FakeElement {
  constructor(tag) {
    this.tagName = tag.toUpperCase();
    this.style = {};
    this.children = [];
    this.listeners = {};
    this.attributes = {};
    this.played = 0;
  }
  appendChild(child) {
    this.children.push(child);
    return child;
  }
  addEventListener(type, fn) {
    (this.listeners[type] ??= []).push(fn);
  }
  removeEventListener(type, fn) {
    this.listeners[type] = (this.listeners[type] ?? []).filter((f) => f !== fn);
  }
  dispatch(type) {
    for (const fn of this.listeners[type] ?? []) fn({ type });
  }
  setAttribute(name, value) {
    this.attributes[name] = value;
  }
  play() {
    this.played += 1;
    return Promise.resolve();
  }
}

export const fakeDocument = { createElement: (tag) => new FakeElement(tag) };
