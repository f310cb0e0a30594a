// The kws_tf metadata inside a .tflite file: the JSON that `python -m kws_tf.export
// --streaming` stores in the flatbuffer's `metadata` entry named "kws_tf" (labels, rates, hop,
// delay, states, decision settings).  Reading it from the bytes the page runs keeps one source
// of truth.  A minimal flatbuffer walk over tflite's schema.fbs: Model.buffers (field 4),
// Model.metadata (field 6); Metadata {name: string, buffer: uint32}; Buffer {data: [ubyte]}.

export class NotAStreamingModel extends Error {}

function reader(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u32 = (at) => view.getUint32(at, true);
  // absolute position of a table's field `i`, or 0 when absent
  const field = (table, i) => {
    const vtable = table - view.getInt32(table, true);
    const at = 4 + 2 * i;
    if (at >= view.getUint16(vtable, true)) return 0;  // older writer: the field is absent
    const offset = view.getUint16(vtable + at, true);
    return offset ? table + offset : 0;
  };
  const deref = (at) => at + u32(at);  // an offset field -> the object it points at
  const vector = (at) => {  // [position of element k] of a vector of offsets
    const start = deref(at), n = u32(start);
    return Array.from({length: n}, (_, k) => start + 4 + 4 * k);
  };
  const bytesOf = (at) => { const start = deref(at); return bytes.subarray(start + 4, start + 4 + u32(start)); };
  return {u32, field, deref, vector, bytesOf};
}

// The "kws_tf" JSON of a .tflite file (Uint8Array), or null if the file has no such entry;
// throws NotAStreamingModel for bytes that are not a TFLite flatbuffer.
export function readMetadata(bytes, name = 'kws_tf') {
  const ident = new TextDecoder().decode(bytes.subarray(4, 8));
  if (bytes.length < 16 || ident !== 'TFL3') {
    throw new NotAStreamingModel('this file is not a TFLite model (no TFL3 identifier)');
  }
  try {
    return findEntry(reader(bytes), name);
  } catch (e) {  // offsets that leave the file, JSON that does not parse: a broken file
    throw new NotAStreamingModel(`this TFLite file cannot be read (${e.message})`);
  }
}

function findEntry(r, name) {
  const model = r.deref(0);
  const metadata = r.field(model, 6), buffers = r.field(model, 4);
  if (!metadata || !buffers) return null;
  const text = new TextDecoder();
  const bufferList = r.vector(buffers);
  for (const entryAt of r.vector(metadata)) {
    const entry = r.deref(entryAt);
    const nameAt = r.field(entry, 0);
    if (!nameAt || text.decode(r.bytesOf(nameAt)) !== name) continue;
    const bufferAt = r.field(entry, 1);
    const buffer = r.deref(bufferList[bufferAt ? r.u32(bufferAt) : 0]);
    const dataAt = r.field(buffer, 0);  // kws_tf's export keeps the JSON inside the flatbuffer
    return dataAt ? JSON.parse(text.decode(r.bytesOf(dataAt))) : null;
  }
  return null;
}

// The streaming metadata, or NotAStreamingModel saying why the file cannot be streamed.
export function streamingMetadata(bytes) {
  const meta = readMetadata(bytes);
  if (!meta || meta.format !== 'kws_tf.streaming' || !meta.states || !Object.keys(meta.states).length) {
    throw new NotAStreamingModel('this .tflite is not a streaming model (no kws_tf metadata with ' +
      'states): open a model_stream_*.tflite from python -m kws_tf.export --streaming');
  }
  return meta;
}
