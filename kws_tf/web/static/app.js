// The page: load the streaming .tflite and its kws_tf metadata, run LiteRT.js on 16 kHz packets
// from the microphone (worklet.js) or from window.kws.feed, decide as `listen` does
// (decision.js) and show bars, detections, settings and timings.  Every failure a user can
// meet is shown in the page (#message), not only in the console.
import {Packetizer} from './audio.js';
import {RecognizeCommands, decisionSettings} from './decision.js';
import {NotAStreamingModel, streamingMetadata} from './metadata.js';
import {Spotter, loadRuntime} from './spotter.js';

const RATE = 16000;  // the stream rate of every kws_tf streaming model
const KEEP = 20000;  // packets of probabilities and timings kept for window.kws (over 30 min)
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

let spotter = null, recognizer = null, packetizer = null, queue = Promise.resolve();
let audio = null;  // {context, stream, node} while the microphone runs
let drawPending = false, latest = null;

// The test hook and what the page has seen so far.
const kws = window.kws = {
  meta: null, settings: null, detections: [], timings: [], errors: [], contextRate: null,
  packets: 0, ready: null, probs: [],
  probabilities: () => kws.probs.map((p) => Array.from(p)),
  // 16 kHz samples (Float32Array) through the same packets, model and decision as the mic
  feed: (samples) => enqueue(packetizer.push(Float32Array.from(samples))),
  reset: () => queue.then(resetStream),
};

function showError(kind, text) {
  kws.errors.push({kind, text});
  const box = $('message');
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = false;
  console.error(`${kind}: ${text}`);
}

function resetStream() {
  spotter.reset();
  const {settings} = kws.settings;
  recognizer = new RecognizeCommands(kws.meta.labels, settings);
  packetizer = new Packetizer(kws.meta.hop);
  Object.assign(kws, {detections: [], timings: [], probs: [], packets: 0});
  $('detections').replaceChildren();
}

async function load(bytes, name) {
  let meta;
  try {
    meta = streamingMetadata(bytes);
  } catch (e) {
    return showError(e instanceof NotAStreamingModel ? 'not-streaming' : 'model', `${name}: ${e.message}`);
  }
  try {
    await loadRuntime(new URL('lib/wasm/', location.href).href);
  } catch (e) {
    return showError('wasm', `WebAssembly failed to load (LiteRT.js): ${e.message || e}`);
  }
  let next;
  try {
    next = await Spotter.create(bytes, meta);
  } catch (e) {  // the model loaded before (if any) stays
    return showError(e instanceof NotAStreamingModel ? 'not-streaming' : 'model', `${name}: ${e.message || e}`);
  }
  const given = Object.fromEntries(['threshold', 'average', 'suppression', 'words']
    .filter((k) => params.has(k)).map((k) => [k, params.get(k)]));
  const settings = decisionSettings(meta, given);
  try {
    new RecognizeCommands(meta.labels, settings.settings);  // bad URL settings fail here
  } catch (e) {
    next.model.delete();
    return showError('settings', `the page's URL settings: ${e.message}`);
  }
  if (spotter) spotter.model.delete();
  [spotter, kws.meta, kws.settings] = [next, meta, settings];
  resetStream();
  describe(name, meta);
  $('start').disabled = false;
  $('message').hidden = true;
}

function describe(name, meta) {
  $('model').textContent = `${name}: ${meta.variant || 'model'}, ${meta.quantization}, ` +
    `${meta.labels.length} labels, ${meta.model_rate / 1000} kHz, ${meta.hop_seconds * 1000} ms packets`;
  const {settings, sources} = kws.settings;
  const unit = {threshold: '', average: ' s', suppression: ' s'};
  $('settings').replaceChildren(...['threshold', 'average', 'suppression'].map((k) =>
    item(`${k} ${settings[k]}${unit[k]} (${sources[k]})`)),
    item(`words ${settings.words ? settings.words.join(', ') : 'every label but the _ ones'} (${sources.words})`));
  $('bars').replaceChildren(...recognizer.labels.map((label) => {
    const row = document.createElement('div');
    row.className = 'bar' + (label.startsWith('_') ? ' quiet' : '');
    row.innerHTML = '<span class="label"></span><span class="track"><span class="fill"></span></span><span class="value"></span>';
    row.querySelector('.label').textContent = label;
    return row;
  }));
}

function item(text) { const li = document.createElement('li'); li.textContent = text; return li; }

function enqueue(packets) {
  for (const packet of packets) queue = queue.then(() => runPacket(packet));
  return queue;
}

async function runPacket(packet) {
  let result;
  try {
    result = await spotter.step(packet);
  } catch (e) {
    return showError('model', `the model failed on a packet: ${e.message || e}`);
  }
  // the window that ends with this packet, in seconds from the stream's start (as listen's)
  const end = spotter.packets * (kws.meta.hop / RATE) - (kws.meta.delay_seconds || 0);
  const start = Math.max(end - (kws.meta.window_seconds || 1.0), 0);
  kws.probs.push(result.probabilities);
  kws.timings.push(result.ms);
  if (kws.probs.length > 2 * KEEP) {  // an hour at the microphone must not grow without end
    kws.probs.splice(0, KEEP);
    kws.timings.splice(0, KEEP);
  }
  kws.packets = spotter.packets;
  const d = recognizer.process(start, end, result.probabilities);
  if (d) {
    kws.detections.push(d);
    $('detections').prepend(item(`${d.time.toFixed(2)} s   ${d.label}   ${d.score.toFixed(3)}`));
  }
  latest = recognizer.view ? recognizer.view(Array.from(result.probabilities)) : result.probabilities;
  if (!drawPending) { drawPending = true; requestAnimationFrame(draw); }
}

function draw() {
  drawPending = false;
  [...$('bars').children].forEach((row, i) => {
    row.querySelector('.fill').style.width = `${(100 * latest[i]).toFixed(1)}%`;
    row.querySelector('.value').textContent = latest[i].toFixed(2);
  });
  const t = kws.timings, mean = t.reduce((a, b) => a + b, 0) / t.length;
  $('timing').textContent = `${t.length} packets, ${t[t.length - 1].toFixed(2)} ms last, ` +
    `${mean.toFixed(2)} ms mean per packet (${kws.meta.hop_seconds * 1000} ms of audio each)` +
    (kws.contextRate ? `; microphone at ${kws.contextRate} Hz, resampled to 16 kHz` : '');
}

async function start() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return showError('no-mic', 'No microphone access here: browsers give it only to pages served ' +
      'from localhost or https (python -m kws_tf.web MODEL --serve).');
  }
  $('start').disabled = true;
  let context, stream;
  try {
    // the worklet is ready before the microphone opens, so little of its first audio is lost
    context = new AudioContext();
    await context.audioWorklet.addModule('worklet.js');
  } catch (e) {
    $('start').disabled = false;
    return showError('audio', `The browser's audio could not start: ${e.message || e}`);
  }
  if (!(stream = await openMicrophone())) {
    context.close();
    $('start').disabled = false;
    return;
  }
  const node = new AudioWorkletNode(context, 'kws-capture',
    {processorOptions: {hop: kws.meta.hop, rate: RATE}, numberOfInputs: 1, numberOfOutputs: 1});
  await queue;
  resetStream();  // a new stream: zero states, time 0 = the microphone's first sample
  kws.contextRate = context.sampleRate;
  node.port.onmessage = (e) => enqueue([e.data]);
  context.createMediaStreamSource(stream).connect(node);
  node.connect(context.destination);  // silent (the worklet writes nothing); keeps it pulled
  audio = {context, stream, node};
  $('message').hidden = true;
  $('stop').disabled = false;
}

// The microphone's stream, or null after saying in the page why there is none.
async function openMicrophone() {
  try {
    return await navigator.mediaDevices.getUserMedia(
      {audio: {channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false}});
  } catch (e) {
    if (e.name === 'NotAllowedError' || e.name === 'SecurityError') {
      showError('mic-denied', 'Microphone access was denied: allow it for this page ' +
        '(the icon in the address bar) and press Start again.');
    } else if (e.name === 'NotFoundError' || e.name === 'OverconstrainedError' || e.name === 'NotReadableError') {
      showError('no-mic', `No usable microphone was found (${e.name}): plug one in and press Start again.`);
    } else {
      showError('mic', `The microphone could not be opened: ${e.name}: ${e.message}`);
    }
    return null;
  }
}

async function stop() {
  if (!audio) return;
  audio.stream.getTracks().forEach((t) => t.stop());
  await audio.context.close();
  audio = null;
  $('stop').disabled = true;
  $('start').disabled = false;
}

async function open(file) {
  await stop();
  await load(new Uint8Array(await file.arrayBuffer()), file.name);
}

$('start').addEventListener('click', start);
$('stop').addEventListener('click', stop);
$('file').addEventListener('change', (e) => e.target.files[0] && open(e.target.files[0]));

const modelUrl = params.get('model') || 'model.tflite';
kws.ready = fetch(modelUrl)
  .then((r) => { if (!r.ok) throw new Error(`HTTP ${r.status}`); return r.arrayBuffer(); })
  .then((b) => load(new Uint8Array(b), modelUrl.split('/').pop()),
    (e) => showError('model', `${modelUrl} could not be fetched: ${e.message}`));
