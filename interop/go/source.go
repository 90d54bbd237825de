package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// multiFlag collects a repeated string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func x509Event(svid *x509svid.SVID, source *workloadapi.X509Source) map[string]any {
	leaf := svid.Certificates[0]
	ev := map[string]any{
		"type":      "x509",
		"spiffeId":  svid.ID.String(),
		"serial":    hex.EncodeToString(leaf.SerialNumber.Bytes()),
		"notBefore": rfc3339(leaf.NotBefore),
		"notAfter":  rfc3339(leaf.NotAfter),
		"chainLen":  len(svid.Certificates),
	}
	if b, err := source.GetX509BundleForTrustDomain(svid.ID.TrustDomain()); err == nil {
		ev["bundleAuthorities"] = len(b.X509Authorities())
	}
	// The SVID must verify against the bundle the same source delivered.
	if _, _, err := x509svid.Verify(svid.Certificates, source); err != nil {
		ev["verifyError"] = err.Error()
	} else {
		ev["verified"] = true
	}
	return ev
}

// openX509Source connects a workloadapi.X509Source to the Workload API at
// addr and waits (bounded by ctx) for its first SVID.
func openX509Source(ctx context.Context, addr string) (*workloadapi.X509Source, error) {
	return workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(addr)))
}

// runX509Source prints the SVID an X509Source holds, then each rotation,
// until it has seen --svids distinct certificates or --timeout passes.
func runX509Source(args []string) error {
	fs := flag.NewFlagSet("x509-source", flag.ExitOnError)
	addr := fs.String("addr", "", "Workload API address (unix:///path or tcp://ip:port)")
	want := fs.Int("svids", 1, "distinct SVIDs to see before exiting")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	_ = fs.Parse(args)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	source, err := openX509Source(ctx, *addr)
	if err != nil {
		return err
	}
	defer source.Close()
	seen := map[string]bool{}
	for {
		svid, err := source.GetX509SVID()
		if err != nil {
			return err
		}
		ev := x509Event(svid, source)
		if serial := ev["serial"].(string); !seen[serial] {
			seen[serial] = true
			emit(ev)
		}
		if len(seen) >= *want {
			return nil
		}
		select {
		case <-source.Updated():
		case <-ctx.Done():
			return fmt.Errorf("saw %d distinct SVIDs of %d before the timeout", len(seen), *want)
		}
	}
}

// runJWTSource fetches a JWT-SVID for --audience and validates it with the
// JWT bundles of the same source; with --validate it also validates each
// token read from stdin (one a line) for the first audience.
func runJWTSource(args []string) error {
	fs := flag.NewFlagSet("jwt-source", flag.ExitOnError)
	addr := fs.String("addr", "", "Workload API address")
	var audiences multiFlag
	fs.Var(&audiences, "audience", "audience (repeatable, at least one)")
	subject := fs.String("subject", "", "SPIFFE ID to ask for (optional)")
	validate := fs.Bool("validate", false, "validate tokens read from stdin")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	_ = fs.Parse(args)
	if len(audiences) == 0 {
		return errors.New("at least one --audience is required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	source, err := workloadapi.NewJWTSource(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(*addr)))
	if err != nil {
		return err
	}
	defer source.Close()
	params := jwtsvid.Params{Audience: audiences[0], ExtraAudiences: audiences[1:]}
	if *subject != "" {
		if params.Subject, err = spiffeid.FromString(*subject); err != nil {
			return err
		}
	}
	svid, err := source.FetchJWTSVID(ctx, params)
	if err != nil {
		return err
	}
	ev := map[string]any{
		"type": "jwt", "spiffeId": svid.ID.String(), "audience": svid.Audience,
		"expiry": rfc3339(svid.Expiry), "token": svid.Marshal(),
	}
	if checked, err := jwtsvid.ParseAndValidate(svid.Marshal(), source, audiences); err != nil {
		ev["validateError"] = err.Error()
	} else {
		ev["validatedId"] = checked.ID.String()
	}
	emit(ev)
	if !*validate {
		return nil
	}
	lines := bufio.NewScanner(os.Stdin)
	lines.Buffer(make([]byte, 64*1024), 1024*1024)
	for lines.Scan() {
		token := strings.TrimSpace(lines.Text())
		if token == "" {
			continue
		}
		checked, err := jwtsvid.ParseAndValidate(token, source, audiences[:1])
		if err != nil {
			emit(map[string]any{"type": "validation", "ok": false, "error": err.Error()})
		} else {
			emit(map[string]any{"type": "validation", "ok": true, "spiffeId": checked.ID.String(), "audience": checked.Audience})
		}
	}
	return lines.Err()
}
