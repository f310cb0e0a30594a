// Audio plumbing shared by the AudioWorklet (microphone) and window.kws.feed (tests): a
// streaming resampler to the model's 16 kHz and a cutter of fixed-size packets.

// Windowed-sinc resampling, a block at a time: output sample k sits at input position
// k * from / to (exact integer arithmetic, so no drift over hours); a Hann-windowed sinc low-pass
// at 0.45 x the lower rate keeps what the mic adds above 8 kHz from folding into the speech band.
export class Resampler {
  constructor(from, to, zeros = 16) {
    this.from = from; this.to = to;
    const cutoff = 0.45 * Math.min(from, to) / from;  // cycles per input sample
    this.cutoff = cutoff;
    this.half = Math.ceil(zeros / (2 * cutoff));  // input samples each side of a tap's centre
    const gcd = (a, b) => (b ? gcd(b, a % b) : a);
    this.step = gcd(from, to);  // output k's offset from its centre is a multiple of step / to
    this.phases = new Map();  // its taps, by that multiple: computed once (160 at 44.1 kHz)
    this.k = 0;  // next output sample
    // the first outputs see silence before the stream, as the model's zero states do
    this.buffer = new Float32Array(this.half);
    this.base = -this.half;  // absolute input index of buffer[0]
  }

  kernel(u) {
    const x = 2 * this.cutoff * u;
    const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
    return 2 * this.cutoff * sinc * (0.5 + 0.5 * Math.cos(Math.PI * u / (this.half + 1)));
  }

  // the 2 x half taps of an output that sits `phase` x step / to after input sample `centre`,
  // for the inputs centre - half + 1 ... centre + half
  taps(phase) {
    let taps = this.phases.get(phase);
    if (!taps) {
      const frac = (phase * this.step) / this.to;
      taps = Float64Array.from({length: 2 * this.half}, (_, m) => this.kernel(frac + this.half - 1 - m));
      this.phases.set(phase, taps);
    }
    return taps;
  }

  push(samples) {
    if (this.from === this.to) return Float32Array.from(samples);
    const joined = new Float32Array(this.buffer.length + samples.length);
    joined.set(this.buffer); joined.set(samples, this.buffer.length);
    const end = this.base + joined.length;  // inputs known: [base, end)
    const out = [];
    for (;;) {
      const position = this.k * this.from;  // output k sits at input position / to (integers)
      const centre = Math.floor(position / this.to);
      if (centre + this.half >= end) break;
      const taps = this.taps((position - centre * this.to) / this.step);
      const first = centre - this.half + 1 - this.base;
      let y = 0;
      for (let m = 0; m < taps.length; m++) y += joined[first + m] * taps[m];
      out.push(y);
      this.k += 1;
    }
    const keep = Math.floor((this.k * this.from) / this.to) - this.half + 1;  // oldest still needed
    this.buffer = joined.slice(keep - this.base);
    this.base = keep;
    return Float32Array.from(out);
  }
}

// Cuts a stream into packets of `hop` samples; a partial packet waits for the next block.
export class Packetizer {
  constructor(hop) { this.hop = hop; this.pending = new Float32Array(0); }

  push(samples) {
    const all = new Float32Array(this.pending.length + samples.length);
    all.set(this.pending); all.set(samples, this.pending.length);
    const packets = [];
    let at = 0;
    for (; at + this.hop <= all.length; at += this.hop) packets.push(all.slice(at, at + this.hop));
    this.pending = all.slice(at);
    return packets;
  }
}
