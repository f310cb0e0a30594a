// The keyword decision of `python -m kws_tf.listen`, line for line (kws_tf's Python
// RecognizeCommands, keyword_view and decision_settings): average the probabilities of the
// last `average` seconds of windows, report the top label if it passes `threshold`, is not a
// `_` label, comes `suppression` seconds after the previous detection and is a new word.
// tests/test_web.py runs both on the same probabilities and compares the detections.

export const DEFAULTS = {threshold: 0.9, average: 0.5, suppression: 0.75};

// The settings a stream decides with: each from `given` (the page's URL parameters) where
// set, else the model's own (metadata `decision`), else the defaults; `sources` says which.
export function decisionSettings(meta, given = {}) {
  const stored = (meta && meta.decision) || {};
  const settings = {}, sources = {};
  for (const name of ['threshold', 'average', 'suppression']) {
    if (given[name] != null) [settings[name], sources[name]] = [Number(given[name]), 'URL'];
    else if (stored[name] != null) [settings[name], sources[name]] = [Number(stored[name]), "the model's"];
    else [settings[name], sources[name]] = [DEFAULTS[name], 'default'];
  }
  if (given.words != null) {
    settings.words = given.words === 'all' ? null : given.words.split(',').map((w) => w.trim()).filter(Boolean);
    sources.words = 'URL';
  } else {
    settings.words = stored.words && stored.words.length ? stored.words : null;
    sources.words = "the model's";
  }
  if (settings.words && !settings.words.length) settings.words = null;
  return {settings, sources};
}

// numpy's float64 sum of a contiguous vector (pairwise: 8 running sums over blocks of up to
// 128), so that summing other labels into _unknown_ rounds exactly as in Python.
function npSum(values) {
  const n = values.length;
  if (n < 8) { let s = -0.0; for (const v of values) s += v; return n ? s : 0; }
  if (n <= 128) {
    const r = values.slice(0, 8);
    let i = 8;
    for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] += values[i + j];
    let s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) s += values[i];
    return s;
  }
  const half = Math.floor(n / 2 / 8) * 8;
  return npSum(values.slice(0, half)) + npSum(values.slice(half));
}

// A model's labels seen as a spotter of `words`: the words and the `_` labels kept, every other
// label's probability summed into `_unknown_` (added if the model has none).
export function keywordView(labels, words) {
  const wanted = new Set(words);
  const missing = [...wanted].filter((w) => !labels.includes(w));
  if (missing.length) throw new Error(`words ${missing.join(', ')} not among the model's labels`);
  const keep = [], other = [];
  labels.forEach((w, i) => (wanted.has(w) || w.startsWith('_') ? keep : other).push(i));
  const viewLabels = keep.map((i) => labels[i]);
  if (!other.length) return {labels: viewLabels, view: (p) => keep.map((i) => p[i])};
  let unknown = viewLabels.indexOf('_unknown_');
  const append = unknown < 0;
  if (append) { viewLabels.push('_unknown_'); unknown = viewLabels.length - 1; }
  return {
    labels: viewLabels,
    view: (p) => {
      const out = keep.map((i) => p[i]);
      const rest = npSum(other.map((i) => p[i]));
      if (append) out.push(rest); else out[unknown] += rest;
      return out;
    },
  };
}

export class RecognizeCommands {
  constructor(labels, {average = DEFAULTS.average, threshold = DEFAULTS.threshold,
    suppression = DEFAULTS.suppression, minimumCount = 2, words = null} = {}) {
    if (!(threshold > 0 && threshold <= 1)) throw new Error(`threshold must be in (0, 1], got ${threshold}`);
    if (!(average > 0) || !(suppression >= 0) || !(minimumCount >= 1)) {
      throw new Error('average must be > 0, suppression >= 0 and the minimum count >= 1');
    }
    this.labels = [...labels];
    this.view = null;
    if (words && words.length) ({labels: this.labels, view: this.view} = keywordView(labels, words));
    Object.assign(this, {average, threshold, suppression, minimumCount});
    this.recent = [];  // {start, end, p}: the windows of the last `average` seconds
    this.last = null;
    this.armed = true;
  }

  // One window (start/end in seconds, the model's probabilities); a detection or null.
  process(start, end, probabilities) {
    let p = Array.from(probabilities);  // float32 -> float64, as np.asarray(p, np.float64)
    if (this.view) p = this.view(p);
    const recent = this.recent;
    if (recent.length && end <= recent[recent.length - 1].end) {
      throw new Error(`windows must come in time order (${end} after ${recent[recent.length - 1].end})`);
    }
    recent.push({start, end, p});
    while (recent.length && recent[0].end <= end - this.average + 1e-6) recent.shift();
    if (recent.length < this.minimumCount) return null;
    // np.mean over axis 0: the rows added in order, then divided by their count
    const average = recent[0].p.slice();
    for (let k = 1; k < recent.length; k++) for (let i = 0; i < average.length; i++) average[i] += recent[k].p[i];
    for (let i = 0; i < average.length; i++) average[i] /= recent.length;
    let top = 0;
    for (let i = 1; i < average.length; i++) if (average[i] > average[top]) top = i;
    const label = this.labels[top], score = average[top];
    if (label.startsWith('_') || score < this.threshold) {
      this.armed = true;  // silence/unknown or nothing confident: the next word is new
      return null;
    }
    if (this.last && end - this.last.time < this.suppression) return null;
    if (this.last && label === this.last.label && !this.armed) return null;
    let best = recent[0];
    for (const r of recent) if (r.p[top] > best.p[top]) best = r;
    this.last = {label, score, start: best.start, time: end};
    this.armed = false;
    return this.last;
  }
}
