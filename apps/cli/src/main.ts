// The weave CLI lands with issue 7.
export {};
