// The microphone's AudioWorklet: mono at the AudioContext's rate in, 16 kHz packets of the
// model's hop out (posted to the page, which runs the model; a worklet must not block).
import {Packetizer, Resampler} from './audio.js';

class Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const {hop, rate} = options.processorOptions;
    this.resampler = new Resampler(sampleRate, rate);  // sampleRate: the context's, a worklet global
    this.packets = new Packetizer(hop);
  }

  process(inputs) {
    const channels = inputs[0];
    if (channels && channels.length) {
      const mono = new Float32Array(channels[0].length);
      for (const ch of channels) for (let i = 0; i < mono.length; i++) mono[i] += ch[i] / channels.length;
      for (const packet of this.packets.push(this.resampler.push(mono))) {
        this.port.postMessage(packet, [packet.buffer]);
      }
    }
    return true;  // keep running while the microphone is connected
  }
}

registerProcessor('kws-capture', Capture);
