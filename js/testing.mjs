// Shared by the helper's Node tests (js/*.test.mjs); not a test itself.
import { after } from "node:test";

// Every timer set from here on is cleared when the test file ends, so a
// helper that schedules a wait of hours cannot keep the process alive.
const timers = new Set();
const realSetTimeout = globalThis.setTimeout;
globalThis.setTimeout = (fn, ms, ...args) => {
  const id = realSetTimeout(() => { timers.delete(id); fn(...args); }, ms);
  timers.add(id);
  return id;
};
after(() => { for (const id of timers) clearTimeout(id); });

export const now = () => performance.now();

// pause waits ms on a timer that is not tracked, so the test's own waits
// are not cleared under it.
export const pause = (ms) => new Promise((r) => realSetTimeout(r, ms));

// until polls cond every step milliseconds, for at most ms; it reports
// whether cond came true.
export async function until(cond, ms, step = 2) {
  for (const end = now() + ms; now() < end; await pause(step)) if (cond()) return true;
  return cond();
}
