// The page's merged state (also window.tickerState), shared by every module as a live
// binding: `import { state } from "./store.js"` always reads the current one.

export let state = null;

export function setState(s) {
  state = s;
  window.tickerState = s;
}
