package main

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// vectors is the file the TypeScript test writes: inputs only, no verdicts.
type vectors struct {
	IDs    []string `json:"ids"`
	Chains []struct {
		Name string `json:"name"`
		// Chain is the peer's chain, leaf first, base64 DER.
		Chain []string `json:"chain"`
		// Bundles maps a trust domain name to its X.509 authorities (base64 DER).
		Bundles map[string][]string `json:"bundles"`
		// Now is the verification time (RFC 3339); empty means the current time.
		Now string `json:"now"`
	} `json:"chains"`
}

func jsonEncode(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }

// runVerify judges every vector with spiffeid.FromString and x509svid.Verify
// and prints all verdicts as one JSON line.
func runVerify(args []string) error {
	fs := flag.NewFlagSet("verify", flag.ExitOnError)
	file := fs.String("vectors", "-", "vectors JSON file ('-' for stdin)")
	_ = fs.Parse(args)
	var raw []byte
	var err error
	if *file == "-" {
		raw, err = io.ReadAll(os.Stdin)
	} else {
		raw, err = os.ReadFile(*file)
	}
	if err != nil {
		return err
	}
	var in vectors
	if err := json.Unmarshal(raw, &in); err != nil {
		return err
	}
	ids := make([]map[string]any, 0, len(in.IDs))
	for _, s := range in.IDs {
		v := map[string]any{"input": s}
		if id, err := spiffeid.FromString(s); err != nil {
			v["ok"], v["error"] = false, err.Error()
		} else {
			v["ok"], v["id"] = true, id.String()
		}
		ids = append(ids, v)
	}
	chains := make([]map[string]any, 0, len(in.Chains))
	for _, c := range in.Chains {
		chains = append(chains, judgeChain(c.Name, c.Chain, c.Bundles, c.Now))
	}
	emit(map[string]any{"type": "verdicts", "ids": ids, "chains": chains})
	return nil
}

func decodeCerts(list []string) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, 0, len(list))
	for _, b64 := range list {
		der, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, err
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		out = append(out, cert)
	}
	return out, nil
}

func judgeChain(name string, chain []string, bundles map[string][]string, now string) map[string]any {
	v := map[string]any{"name": name}
	set := x509bundle.NewSet()
	for td, list := range bundles {
		trustDomain, err := spiffeid.TrustDomainFromString(td)
		if err != nil {
			v["ok"], v["stage"], v["error"] = false, "setup", err.Error()
			return v
		}
		authorities, err := decodeCerts(list)
		if err != nil {
			v["ok"], v["stage"], v["error"] = false, "setup", err.Error()
			return v
		}
		set.Add(x509bundle.FromX509Authorities(trustDomain, authorities))
	}
	certs, err := decodeCerts(chain)
	if err != nil {
		// x509svid.ParseAndVerify fails the same way on bytes Go cannot parse.
		v["ok"], v["stage"], v["error"] = false, "parse", err.Error()
		return v
	}
	var opts []x509svid.VerifyOption
	if now != "" {
		at, err := time.Parse(time.RFC3339Nano, now)
		if err != nil {
			v["ok"], v["stage"], v["error"] = false, "setup", err.Error()
			return v
		}
		opts = append(opts, x509svid.WithTime(at))
	}
	id, _, err := x509svid.Verify(certs, set, opts...)
	if err == nil {
		v["ok"], v["id"] = true, id.String()
		return v
	}
	v["ok"], v["error"] = false, err.Error()
	v["stage"], v["reason"] = classify(err)
	return v
}

// classify names the step of x509svid.Verify that refused, and for a refused
// path validation the crypto/x509 reason, so the test can compare it with
// Weave's error code without matching message text.
func classify(err error) (stage, reason string) {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "could not get leaf SPIFFE ID"):
		switch {
		case strings.Contains(msg, "no URI SAN"):
			return "id", "no-uri-san"
		case strings.Contains(msg, "more than one URI SAN"):
			return "id", "multiple-uri-sans"
		}
		return "id", "invalid-spiffe-id"
	case strings.Contains(msg, "leaf certificate with CA flag"):
		return "leaf", "ca"
	case strings.Contains(msg, "KeyCertSign"), strings.Contains(msg, "KeyCrlSign"):
		return "leaf", "key-usage"
	case strings.Contains(msg, "could not get X509 bundle"):
		return "bundle", "unknown-trust-domain"
	}
	var invalid x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	var critical x509.UnhandledCriticalExtension
	switch {
	case errors.As(err, &invalid):
		switch invalid.Reason {
		case x509.Expired:
			if strings.Contains(invalid.Detail, "is before") {
				return "chain", "not-yet-valid"
			}
			return "chain", "expired"
		case x509.NotAuthorizedToSign:
			return "chain", "not-a-ca"
		case x509.TooManyIntermediates:
			return "chain", "path-length"
		case x509.CANotAuthorizedForThisName, x509.UnconstrainedName, x509.NameConstraintsWithoutSANs:
			return "chain", "name-constraints"
		}
		return "chain", "invalid"
	case errors.As(err, &critical):
		return "chain", "unknown-critical-extension"
	case errors.As(err, &unknown):
		return "chain", "unknown-authority"
	}
	return "chain", "other"
}
