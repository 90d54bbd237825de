// One timer for many deadlines lives in @weave/transport, whose connections'
// certificate ends wait on it too; a2a's modules and public API keep taking it
// from here.
export { Deadlines, type Deadline } from '@weave/transport';
