// Command weave-go-harness drives go-spiffe v2 against Weave in the interop
// tests (test code only; never shipped). Each subcommand prints JSON lines on
// stdout so the TypeScript tests can read the verdicts of go-spiffe itself:
//
//	x509-source  read X.509-SVIDs from a Workload API (workloadapi.X509Source)
//	jwt-source   fetch a JWT-SVID (workloadapi.JWTSource) and validate tokens
//	call         POST a body to an HTTPS URL with a spiffetls/tlsconfig mTLS client
//	serve        answer HTTPS requests with a spiffetls/tlsconfig mTLS server
//	verify       judge SPIFFE IDs and X.509-SVID chains (spiffeid, x509svid)
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: weave-go-harness <x509-source|jwt-source|call|serve|verify> [flags]")
	}
	cmds := map[string]func([]string) error{
		"x509-source": runX509Source,
		"jwt-source":  runJWTSource,
		"call":        runCall,
		"serve":       runServe,
		"verify":      runVerify,
	}
	cmd, ok := cmds[os.Args[1]]
	if !ok {
		fail("unknown subcommand " + os.Args[1])
	}
	if err := cmd(os.Args[2:]); err != nil {
		emit(map[string]any{"type": "error", "error": err.Error()})
		os.Exit(1)
	}
}

// emit writes one JSON object as a line on stdout.
func emit(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		fail("cannot encode output: " + err.Error())
	}
	fmt.Println(string(b))
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, msg)
	os.Exit(2)
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }
