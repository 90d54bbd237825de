// The SPIFFE Workload API client and dev server (issue 3) export from here.
export {};
