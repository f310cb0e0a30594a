// The streaming .tflite in LiteRT.js (WebAssembly): one packet per run, the states carried here
// by name (each output state_* goes back in as the input of the same name), from zeros.
import {Tensor, loadAndCompile, loadLiteRt} from '@litertjs/core';
import {NotAStreamingModel} from './metadata.js';

let runtime = null;

// Load the WebAssembly runtime once (wasmDir holds litert_wasm_*.js/.wasm).
export function loadRuntime(wasmDir) {
  if (typeof WebAssembly !== 'object') return Promise.reject(new Error('this browser has no WebAssembly'));
  runtime = runtime || loadLiteRt(wasmDir);
  return runtime;
}

const size = (shape) => shape.reduce((a, b) => a * b, 1);

export class Spotter {
  constructor(model, meta) {
    this.model = model;
    this.meta = meta;
    this.hop = meta.hop;
    this.stateNames = Object.keys(meta.states).sort();
    this.reset();
  }

  static async create(bytes, meta) {
    const model = await loadAndCompile(bytes, {accelerator: 'wasm'});
    const inputs = model.getInputDetails().map((d) => d.name);
    const outputs = model.getOutputDetails().map((d) => d.name);
    const missing = ['audio', ...Object.keys(meta.states)].filter((n) => !inputs.includes(n))
      .concat(['probabilities', ...Object.keys(meta.states)].filter((n) => !outputs.includes(n)));
    if (missing.length) {
      model.delete();
      throw new NotAStreamingModel(`this .tflite is not a streaming model: its signature lacks ${missing.join(', ')}`);
    }
    return new Spotter(model, meta);
  }

  reset() {
    this.states = Object.fromEntries(this.stateNames.map((n) => [n, new Float32Array(size(this.meta.states[n]))]));
    this.packets = 0;
  }

  // One packet (Float32Array of `hop` 16 kHz samples) -> {probabilities, ms}; ms is the whole
  // step as the page pays it: tensors in, the run, tensors out.
  async step(packet) {
    const t0 = performance.now();
    const inputs = {audio: new Tensor(Float32Array.from(packet), [1, this.hop])};
    for (const n of this.stateNames) inputs[n] = new Tensor(this.states[n], this.meta.states[n]);
    let outputs = {};
    try {
      outputs = await this.model.run(inputs);
      const probabilities = outputs.probabilities.toTypedArray().slice();
      for (const n of this.stateNames) this.states[n] = outputs[n].toTypedArray().slice();
      this.packets += 1;
      return {probabilities, ms: performance.now() - t0};
    } finally {  // tensors live in WebAssembly memory: free them
      for (const t of [...Object.values(inputs), ...Object.values(outputs)]) t.delete();
    }
  }
}
