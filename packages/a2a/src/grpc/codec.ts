/**
 * A binary codec between protobuf bytes and Weave's ProtoJSON-shaped wire
 * objects, compiled once per message type from the vendored `a2a.proto`.
 *
 * Why not protobufjs's own `fromObject`/`encode`/`decode` plus a ProtoJSON
 * conversion (what the gRPC binding first did): that walked every message
 * three times per direction — wire object to a protobufjs object by
 * reflection, to a `Message` instance, to bytes; bytes to a `Message`, to wire
 * by reflection — with an allocation per level each time. Here each type gets
 * a plan (its fields by number, with their writer and reader chosen once), and
 * a wire object is written straight to bytes and read straight back: no
 * reflection and no intermediate objects per call.
 *
 * ProtoJSON as the JSON bindings speak it: camelCase names, enums by name
 * (an unknown number stays a number, an unknown name is not written), bytes
 * as base64, int64 as numbers, `google.protobuf.Struct`/`Value`/`ListValue` as
 * plain JSON, `Timestamp` as an ISO 8601 string. Decoding omits absent fields,
 * except maps (always present) and fields the proto marks REQUIRED (scalars
 * get their default, repeated fields `[]`): Weave's schemas want those.
 * Encoding ignores unknown members and `null` (except as a `Value`: JSON null).
 */
import { isUtf8 } from 'node:buffer';
import protobuf from 'protobufjs';
import { A2AClientError } from '../errors.js';

/**
 * Deepest nesting of messages, `google.protobuf.Struct` / `Value` and lists
 * the codec follows. A deeper input is refused (it would otherwise cost a
 * deep recursion here and again wherever the value is serialized later).
 */
export const MAX_PROTO_DEPTH = 100;

/** A message could not be converted (too deep, or a value of the wrong type). */
export class ProtoConversionError extends A2AClientError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PROTO_CONVERSION_FAILED', message, options);
  }
}

/** A JSON object as it travels in the JSON bindings (untrusted until validated). */
export type WireObject = Record<string, unknown>;

type Writer = protobuf.Writer;
type Reader = protobuf.Reader;
/** Writes one value (no tag). */
type Put = (w: Writer, v: unknown, depth: number) => void;
/** Reads one value (the tag already read). */
type Get = (r: Reader, depth: number) => unknown;

const enum Wire {
  Varint = 0,
  Fixed64 = 1,
  Bytes = 2,
  Fixed32 = 5,
}

interface FieldPlan {
  readonly name: string;
  readonly id: number;
  readonly repeated: boolean;
  /** Map fields: key and value codecs of the entry message. */
  readonly map?: { readonly key: ValueCodec; readonly value: ValueCodec };
  readonly value: ValueCodec;
  /** google.protobuf.Value: `null` is a value (JSON null), not absence. */
  readonly nullable: boolean;
  /** Other members of this field's oneof: the last one read wins. */
  readonly siblings: readonly string[];
}

interface ValueCodec {
  readonly wire: Wire;
  /** Numeric scalars may arrive packed in one length-delimited run. */
  readonly packable: boolean;
  readonly put: Put;
  readonly get: Get;
  /**
   * `undefined` from `put`'s point of view means "write nothing": an enum
   * name the proto does not know. Such values are skipped, as protobufjs's
   * `fromObject` leaves them unset.
   */
  readonly accepts?: (v: unknown) => boolean;
  /** The value an absent map entry member reads as. */
  readonly empty: () => unknown;
}

interface MessagePlan {
  readonly name: string;
  readonly fields: FieldPlan[];
  readonly byId: Array<FieldPlan | undefined>;
  /** Filled in on decode when absent: maps (`{}`), REQUIRED repeated (`[]`) and REQUIRED scalars. */
  readonly defaults: Array<readonly [string, () => unknown]>;
}

function tooDeep(): never {
  throw new ProtoConversionError(`message nested deeper than ${MAX_PROTO_DEPTH} levels`);
}

function isRequired(field: protobuf.Field): boolean {
  const fb = field.options?.['(google.api.field_behavior)'] as unknown;
  return fb === 'REQUIRED' || (Array.isArray(fb) && fb.includes('REQUIRED'));
}

const tagOf = (id: number, wire: Wire) => ((id << 3) | wire) >>> 0;

function toNumber(v: unknown): number {
  return typeof v === 'number' ? v : (v as { toNumber(): number }).toNumber();
}

// ---- scalars -------------------------------------------------------------------

const SCALARS: Record<string, ValueCodec> = (() => {
  const num = (wire: Wire, put: Put, get: Get, empty: unknown = 0): ValueCodec => ({
    wire,
    packable: true,
    put,
    get,
    empty: () => empty,
  });
  return {
    double: num(
      Wire.Fixed64,
      (w, v) => w.double(Number(v)),
      (r) => r.double(),
    ),
    float: num(
      Wire.Fixed32,
      (w, v) => w.float(Number(v)),
      (r) => r.float(),
    ),
    int32: num(
      Wire.Varint,
      (w, v) => w.int32(Number(v) | 0),
      (r) => r.int32(),
    ),
    uint32: num(
      Wire.Varint,
      (w, v) => w.uint32(Number(v) >>> 0),
      (r) => r.uint32(),
    ),
    sint32: num(
      Wire.Varint,
      (w, v) => w.sint32(Number(v) | 0),
      (r) => r.sint32(),
    ),
    fixed32: num(
      Wire.Fixed32,
      (w, v) => w.fixed32(Number(v) >>> 0),
      (r) => r.fixed32(),
    ),
    sfixed32: num(
      Wire.Fixed32,
      (w, v) => w.sfixed32(Number(v) | 0),
      (r) => r.sfixed32(),
    ),
    // ProtoJSON writes int64 as strings; both a string and a number are taken, a number comes back.
    int64: num(
      Wire.Varint,
      (w, v) => w.int64(long(v)),
      (r) => toNumber(r.int64()),
    ),
    uint64: num(
      Wire.Varint,
      (w, v) => w.uint64(long(v)),
      (r) => toNumber(r.uint64()),
    ),
    sint64: num(
      Wire.Varint,
      (w, v) => w.sint64(long(v)),
      (r) => toNumber(r.sint64()),
    ),
    fixed64: num(
      Wire.Fixed64,
      (w, v) => w.fixed64(long(v)),
      (r) => toNumber(r.fixed64()),
    ),
    sfixed64: num(
      Wire.Fixed64,
      (w, v) => w.sfixed64(long(v)),
      (r) => toNumber(r.sfixed64()),
    ),
    bool: num(
      Wire.Varint,
      (w, v) => w.bool(Boolean(v)),
      (r) => r.bool(),
      false,
    ),
    string: {
      wire: Wire.Bytes,
      packable: false,
      put: (w, v) => putString(w, String(v)),
      get: getString,
      empty: () => '',
    },
    bytes: {
      wire: Wire.Bytes,
      packable: false,
      put: (w, v) => {
        if (typeof v === 'string') w.bytes(Buffer.from(v, 'base64'));
        else if (v instanceof Uint8Array) w.bytes(v);
        else throw new ProtoConversionError('bytes: base64 string expected');
      },
      get: (r) => {
        const b = r.bytes();
        return (Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength)).toString(
          'base64',
        );
      },
      empty: () => '',
    },
  };
})();

function long(v: unknown): number | string {
  if (typeof v === 'string' && /^-?\d+$/.test(v.trim())) return v.trim();
  const n = Number(v);
  return Number.isFinite(n) ? Math.trunc(n) : 0;
}

function enumCodec(e: protobuf.Enum): ValueCodec {
  // A Map, not the enum's plain object: a name such as "toString" must not
  // find the prototype's member, and the lookup runs for every enum value written.
  const byName = new Map(Object.entries(e.values));
  const byId = e.valuesById;
  return {
    wire: Wire.Varint,
    packable: true,
    accepts: (v) => typeof v === 'number' || (typeof v === 'string' && byName.has(v)),
    put: (w, v) => w.int32(typeof v === 'number' ? v | 0 : byName.get(v as string)!),
    get: (r) => {
      const n = r.int32();
      return byId[n] ?? n;
    },
    empty: () => byId[0] ?? 0,
  };
}

// ---- well-known types ----------------------------------------------------------

function putStruct(w: Writer, v: unknown, depth: number): void {
  if (depth > MAX_PROTO_DEPTH) tooDeep();
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new ProtoConversionError('google.protobuf.Struct: object expected');
  }
  for (const [k, fv] of Object.entries(v as WireObject)) {
    if (fv === undefined) continue;
    // fields = 1: map entry { key = 1; value = 2 }
    w.uint32(tagOf(1, Wire.Bytes)).fork();
    putString(w.uint32(tagOf(1, Wire.Bytes)), k);
    w.uint32(tagOf(2, Wire.Bytes)).fork();
    putValue(w, fv, depth + 1);
    w.ldelim();
    w.ldelim();
  }
}

function putList(w: Writer, v: unknown, depth: number): void {
  if (depth > MAX_PROTO_DEPTH) tooDeep();
  if (!Array.isArray(v)) throw new ProtoConversionError('google.protobuf.ListValue: array expected');
  for (const e of v) {
    w.uint32(tagOf(1, Wire.Bytes)).fork();
    putValue(w, e, depth + 1);
    w.ldelim();
  }
}

function putValue(w: Writer, v: unknown, depth: number): void {
  if (depth > MAX_PROTO_DEPTH) tooDeep();
  if (v === null || v === undefined) w.uint32(tagOf(1, Wire.Varint)).int32(0);
  else if (typeof v === 'number') w.uint32(tagOf(2, Wire.Fixed64)).double(v);
  else if (typeof v === 'string') putString(w.uint32(tagOf(3, Wire.Bytes)), v);
  else if (typeof v === 'boolean') w.uint32(tagOf(4, Wire.Varint)).bool(v);
  else if (Array.isArray(v)) {
    w.uint32(tagOf(6, Wire.Bytes)).fork();
    putList(w, v, depth + 1);
    w.ldelim();
  } else if (typeof v === 'object') {
    w.uint32(tagOf(5, Wire.Bytes)).fork();
    putStruct(w, v, depth + 1);
    w.ldelim();
  } else throw new ProtoConversionError(`google.protobuf.Value: unsupported ${typeof v}`);
}

/** Reads a length-delimited body with `each(fieldNumber, wireType)` per field. */
function readBody(r: Reader, each: (id: number, wire: number) => void): void {
  const end = r.uint32() + r.pos;
  while (r.pos < end) {
    const t = r.uint32();
    each(t >>> 3, t & 7);
  }
  if (r.pos !== end) throw new ProtoConversionError('a field overran its message');
}

/**
 * Writes a protobuf string. A JavaScript string with an unpaired surrogate
 * (valid in a JSON escape, `"\ud800"`) has no UTF-8 form: written anyway it
 * would be bytes that no decoder takes (this one included), so it is refused
 * here, where the reason can still be told.
 */
function putString(w: Writer, s: string): void {
  if (!(s as string & { isWellFormed(): boolean }).isWellFormed()) {
    throw new ProtoConversionError('a string has an unpaired surrogate, which UTF-8 cannot carry');
  }
  w.string(s);
}

/**
 * A protobuf string: UTF-8 by the protobuf spec, and refused when it is not,
 * as the JSON bindings refuse a body that is not UTF-8 (protobufjs's own
 * reader would put U+FFFD in place of the bad bytes, and the call would go
 * on with text the caller never sent).
 */
function getString(r: Reader): string {
  const bytes = r.bytes();
  if (!isUtf8(bytes)) throw new ProtoConversionError('a string field is not valid UTF-8');
  return Buffer.isBuffer(bytes)
    ? bytes.toString('utf8')
    : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
}

/**
 * `o[key] = value` as `JSON.parse` does it: a `__proto__` key is an own
 * member like any other. A plain assignment would set the object's
 * prototype instead, so the gRPC binding would hand a handler data whose
 * members the JSON bindings do not (inherited, invisible to the stored task).
 */
function setMember(o: WireObject, key: string, value: unknown): void {
  if (key === '__proto__') {
    Object.defineProperty(o, key, { value, enumerable: true, writable: true, configurable: true });
  } else o[key] = value;
}

function getStruct(r: Reader, depth: number): WireObject {
  if (depth > MAX_PROTO_DEPTH) tooDeep();
  const out: WireObject = {};
  readBody(r, (id, wire) => {
    if (id !== 1 || wire !== Wire.Bytes) return void r.skipType(wire);
    let key = '';
    let value: unknown = null;
    readBody(r, (eid, ewire) => {
      if (eid === 1 && ewire === Wire.Bytes) key = getString(r);
      else if (eid === 2 && ewire === Wire.Bytes) value = getValue(r, depth + 1);
      else r.skipType(ewire);
    });
    setMember(out, key, value);
  });
  return out;
}

function getList(r: Reader, depth: number): unknown[] {
  if (depth > MAX_PROTO_DEPTH) tooDeep();
  const out: unknown[] = [];
  readBody(r, (id, wire) => {
    if (id === 1 && wire === Wire.Bytes) out.push(getValue(r, depth + 1));
    else r.skipType(wire);
  });
  return out;
}

function getValue(r: Reader, depth: number): unknown {
  if (depth > MAX_PROTO_DEPTH) tooDeep();
  let out: unknown = null;
  readBody(r, (id, wire) => {
    // The `kind` oneof: the last member read wins.
    if (id === 1 && wire === Wire.Varint) {
      r.int32();
      out = null;
    } else if (id === 2 && wire === Wire.Fixed64) out = r.double();
    else if (id === 3 && wire === Wire.Bytes) out = getString(r);
    else if (id === 4 && wire === Wire.Varint) out = r.bool();
    else if (id === 5 && wire === Wire.Bytes) out = getStruct(r, depth + 1);
    else if (id === 6 && wire === Wire.Bytes) out = getList(r, depth + 1);
    else r.skipType(wire);
  });
  return out;
}

function putTimestamp(w: Writer, v: unknown): void {
  const ms = typeof v === 'string' ? Date.parse(v) : Number.NaN;
  if (Number.isNaN(ms)) throw new ProtoConversionError('google.protobuf.Timestamp: ISO 8601 string expected');
  const seconds = Math.floor(ms / 1000);
  const nanos = (ms - seconds * 1000) * 1e6;
  if (seconds !== 0) w.uint32(tagOf(1, Wire.Varint)).int64(seconds);
  if (nanos !== 0) w.uint32(tagOf(2, Wire.Varint)).int32(nanos);
}

function getTimestamp(r: Reader): string {
  let seconds = 0;
  let nanos = 0;
  readBody(r, (id, wire) => {
    if (id === 1 && wire === Wire.Varint) seconds = toNumber(r.int64());
    else if (id === 2 && wire === Wire.Varint) nanos = r.int32();
    else r.skipType(wire);
  });
  const d = new Date(seconds * 1000 + Math.floor(nanos / 1e6));
  if (Number.isNaN(d.getTime())) throw new ProtoConversionError('timestamp out of range');
  return d.toISOString();
}

/** A length-delimited member whose body `put` writes. */
function delimited(put: Put, get: Get, empty: () => unknown): ValueCodec {
  return {
    wire: Wire.Bytes,
    packable: false,
    put: (w, v, depth) => {
      w.fork();
      put(w, v, depth);
      w.ldelim();
    },
    get,
    empty,
  };
}

const WELL_KNOWN: Record<string, ValueCodec> = {
  '.google.protobuf.Struct': delimited(putStruct, getStruct, () => ({})),
  '.google.protobuf.Value': delimited(putValue, getValue, () => null),
  '.google.protobuf.ListValue': delimited(putList, getList, () => []),
  '.google.protobuf.Timestamp': delimited(
    (w, v) => putTimestamp(w, v),
    (r) => getTimestamp(r),
    () => new Date(0).toISOString(),
  ),
};

// ---- messages ------------------------------------------------------------------

const plans = new Map<protobuf.Type, MessagePlan>();

function planOf(type: protobuf.Type): MessagePlan {
  const known = plans.get(type);
  if (known) return known;
  const plan: MessagePlan = { name: type.name, fields: [], byId: [], defaults: [] };
  // Registered before its fields: recursive types (Struct in Message in Task...) find it.
  plans.set(type, plan);
  for (const field of type.fieldsArray) {
    field.resolve();
    const value = codecOf(field.resolvedType, field.type);
    const siblings = field.partOf ? field.partOf.oneof.filter((n) => n !== field.name) : [];
    let f: FieldPlan;
    if (field.map) {
      const mf = field as unknown as protobuf.MapField;
      f = {
        name: field.name,
        id: field.id,
        repeated: false,
        map: { key: SCALARS[mf.keyType]!, value },
        value,
        nullable: false,
        siblings,
      };
      plan.defaults.push([field.name, () => ({})]);
    } else {
      f = {
        name: field.name,
        id: field.id,
        repeated: field.repeated,
        value,
        nullable: field.resolvedType?.fullName === '.google.protobuf.Value',
        siblings,
      };
      if (isRequired(field)) {
        if (field.repeated) plan.defaults.push([field.name, () => []]);
        else if (!field.resolvedType) plan.defaults.push([field.name, value.empty]);
      }
    }
    plan.fields.push(f);
    plan.byId[field.id] = f;
  }
  return plan;
}

function codecOf(resolved: protobuf.Type | protobuf.Enum | null, typeName: string): ValueCodec {
  if (resolved instanceof protobuf.Enum) return enumCodec(resolved);
  if (resolved instanceof protobuf.Type) {
    const wk = WELL_KNOWN[resolved.fullName];
    if (wk) return wk;
    // Resolved lazily: the nested plan may still be under construction.
    let plan: MessagePlan | undefined;
    const get = () => (plan ??= planOf(resolved));
    return delimited(
      (w, v, depth) => putMessage(get(), w, v, depth),
      (r, depth) => getMessageBody(get(), r, depth),
      () => applyDefaults(get(), {}),
    );
  }
  const scalar = SCALARS[typeName];
  if (!scalar) throw new ProtoConversionError(`unsupported field type ${typeName}`);
  return scalar;
}

function putMessage(plan: MessagePlan, w: Writer, v: unknown, depth: number): void {
  if (depth > MAX_PROTO_DEPTH) tooDeep();
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new ProtoConversionError(`${plan.name}: object expected`);
  }
  const src = v as WireObject;
  for (const f of plan.fields) {
    const fv = src[f.name];
    if (fv === undefined || (fv === null && !f.nullable)) continue;
    const c = f.value;
    if (f.map) {
      if (typeof fv !== 'object' || Array.isArray(fv)) {
        throw new ProtoConversionError(`${f.name}: object expected`);
      }
      const tag = tagOf(f.id, Wire.Bytes);
      const { key, value } = f.map;
      for (const [k, mv] of Object.entries(fv as WireObject)) {
        if (mv === undefined || (value.accepts && !value.accepts(mv))) continue;
        w.uint32(tag).fork();
        w.uint32(tagOf(1, key.wire));
        key.put(w, k, depth + 1);
        w.uint32(tagOf(2, value.wire));
        value.put(w, mv, depth + 1);
        w.ldelim();
      }
    } else if (f.repeated) {
      if (!Array.isArray(fv)) throw new ProtoConversionError(`${f.name}: array expected`);
      const tag = tagOf(f.id, c.wire);
      for (const e of fv) {
        if (c.accepts && !c.accepts(e)) continue;
        w.uint32(tag);
        c.put(w, e, depth + 1);
      }
    } else {
      if (c.accepts && !c.accepts(fv)) continue;
      w.uint32(tagOf(f.id, c.wire));
      c.put(w, fv, depth + 1);
    }
  }
}

function getMessageBody(plan: MessagePlan, r: Reader, depth: number): WireObject {
  const end = r.uint32() + r.pos;
  const out = getFields(plan, r, end, depth);
  if (r.pos !== end) throw new ProtoConversionError(`${plan.name}: a field overran its message`);
  return out;
}

function getFields(plan: MessagePlan, r: Reader, end: number, depth: number): WireObject {
  if (depth > MAX_PROTO_DEPTH) tooDeep();
  const out: WireObject = {};
  while (r.pos < end) {
    const t = r.uint32();
    const wire = t & 7;
    const f = plan.byId[t >>> 3];
    if (f === undefined) {
      r.skipType(wire);
      continue;
    }
    const c = f.value;
    if (f.map) {
      if (wire !== Wire.Bytes) {
        r.skipType(wire);
        continue;
      }
      const m = (out[f.name] ??= {}) as WireObject;
      const { key, value } = f.map;
      let k: unknown = key.empty();
      let mv: unknown;
      let seen = false;
      const entryEnd = r.uint32() + r.pos;
      while (r.pos < entryEnd) {
        const et = r.uint32();
        const ew = et & 7;
        if (et >>> 3 === 1 && ew === key.wire) k = key.get(r, depth + 1);
        else if (et >>> 3 === 2 && ew === value.wire) {
          mv = value.get(r, depth + 1);
          seen = true;
        } else r.skipType(ew);
      }
      if (r.pos !== entryEnd) throw new ProtoConversionError(`${f.name}: a map entry overran its message`);
      setMember(m, String(k), seen ? mv : value.empty());
    } else if (f.repeated) {
      const list = (out[f.name] ??= []) as unknown[];
      if (wire === Wire.Bytes && c.packable) {
        const runEnd = r.uint32() + r.pos;
        while (r.pos < runEnd) list.push(c.get(r, depth + 1));
      } else if (wire === c.wire) list.push(c.get(r, depth + 1));
      else r.skipType(wire);
    } else if (wire === c.wire) {
      out[f.name] = c.get(r, depth + 1);
      for (const s of f.siblings) delete out[s];
    } else r.skipType(wire);
  }
  return applyDefaults(plan, out);
}

function applyDefaults(plan: MessagePlan, out: WireObject): WireObject {
  for (const [name, make] of plan.defaults) if (out[name] === undefined) out[name] = make();
  return out;
}

// ---- the codec -----------------------------------------------------------------

/** Binary codec of one message type, on wire objects. */
export interface WireCodec {
  readonly type: protobuf.Type;
  encode(wire: unknown): Buffer;
  decode(bytes: Uint8Array): WireObject;
}

/**
 * The codec of `type`, compiled on first use.
 *
 * @throws {ProtoConversionError} from `encode`/`decode` for bad input.
 */
export function compileCodec(type: protobuf.Type): WireCodec {
  const plan = planOf(type);
  return {
    type,
    encode(wire: unknown): Buffer {
      const w = protobuf.Writer.create();
      try {
        putMessage(plan, w, wire, 0);
      } catch (err) {
        if (err instanceof ProtoConversionError) throw err;
        throw new ProtoConversionError(`cannot encode ${type.name}: ${String(err)}`, { cause: err });
      }
      const out = w.finish();
      return Buffer.isBuffer(out) ? out : Buffer.from(out.buffer, out.byteOffset, out.byteLength);
    },
    decode(bytes: Uint8Array): WireObject {
      const r = protobuf.Reader.create(bytes);
      try {
        const out = getFields(plan, r, r.len, 0);
        if (r.pos !== r.len) throw new ProtoConversionError(`${type.name}: a field overran the message`);
        return out;
      } catch (err) {
        if (err instanceof ProtoConversionError) throw err;
        throw new ProtoConversionError(`cannot decode ${type.name}: ${String(err)}`, { cause: err });
      }
    },
  };
}
