// AudioWorklet processor: microphone audio at the context's rate in, 16 kHz PCM16 frames out.
//
// Resampling happens here, on the audio thread, with a windowed-sinc low-pass interpolator
// (a plain decimation of 48 kHz to 16 kHz would fold everything above 8 kHz back into speech).
// Every `frameMs` of output it posts {pcm: ArrayBuffer (Int16 LE mono), level: RMS 0..1} to the
// page, which sends `pcm` as one binary WebSocket frame.

const HALF_TAPS = 16;

class SincResampler {
  constructor(inRate, outRate) {
    this.step = inRate / outRate; // input samples per output sample
    this.cutoff = Math.min(1, outRate / inRate) * 0.94; // of the input Nyquist, with a guard band
    this.passthrough = inRate === outRate;
    this.buf = new Float32Array(0);
    this.pos = 0; // where the next output sample falls, in input samples from buf[0]
  }

  kernel(x) {
    if (x === 0) return this.cutoff;
    const a = Math.PI * x;
    const sinc = Math.sin(this.cutoff * a) / a;
    const w = 0.5 + 0.5 * Math.cos((Math.PI * x) / (HALF_TAPS + 1)); // Hann window
    return sinc * w;
  }

  push(input) {
    if (this.passthrough) return Float32Array.from(input);
    const buf = new Float32Array(this.buf.length + input.length);
    buf.set(this.buf);
    buf.set(input, this.buf.length);
    const out = [];
    while (this.pos + HALF_TAPS < buf.length) {
      const centre = Math.floor(this.pos);
      let acc = 0;
      for (let k = centre - HALF_TAPS + 1; k <= centre + HALF_TAPS; k++) {
        if (k >= 0) acc += buf[k] * this.kernel(this.pos - k);
      }
      out.push(acc);
      this.pos += this.step;
    }
    const keepFrom = Math.max(0, Math.floor(this.pos) - HALF_TAPS);
    this.buf = buf.slice(keepFrom);
    this.pos -= keepFrom;
    return Float32Array.from(out);
  }
}

class Pcm16Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.targetRate = opts.targetRate || 16000;
    const frameMs = Math.min(100, Math.max(20, opts.frameMs || 40));
    this.frameSamples = Math.round((this.targetRate * frameMs) / 1000);
    this.resampler = new SincResampler(sampleRate, this.targetRate);
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
    this.sumSquares = 0;
    this.running = true;
    this.port.onmessage = (e) => {
      if (e.data === "stop") this.running = false;
    };
  }

  process(inputs) {
    const input = inputs[0];
    if (input && input.length > 0) {
      let mono = input[0];
      if (input.length > 1) {
        mono = new Float32Array(input[0].length);
        for (const ch of input) for (let i = 0; i < ch.length; i++) mono[i] += ch[i] / input.length;
      }
      const out = this.resampler.push(mono);
      for (let i = 0; i < out.length; i++) {
        const s = Math.max(-1, Math.min(1, out[i]));
        this.sumSquares += s * s;
        this.frame[this.filled++] = s < 0 ? Math.round(s * 32768) : Math.round(s * 32767);
        if (this.filled === this.frameSamples) {
          const level = Math.sqrt(this.sumSquares / this.frameSamples);
          this.port.postMessage({ pcm: this.frame.buffer, level }, [this.frame.buffer]);
          this.frame = new Int16Array(this.frameSamples);
          this.filled = 0;
          this.sumSquares = 0;
        }
      }
    }
    return this.running;
  }
}

registerProcessor("pcm16-capture", Pcm16Capture);
