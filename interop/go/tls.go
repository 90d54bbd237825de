package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// authorizerFrom builds the go-spiffe authorizer named by exactly one of the flags.
func authorizerFrom(id, memberOf string) (tlsconfig.Authorizer, error) {
	switch {
	case id != "" && memberOf == "":
		parsed, err := spiffeid.FromString(id)
		if err != nil {
			return nil, err
		}
		return tlsconfig.AuthorizeID(parsed), nil
	case memberOf != "" && id == "":
		td, err := spiffeid.TrustDomainFromString(memberOf)
		if err != nil {
			return nil, err
		}
		return tlsconfig.AuthorizeMemberOf(td), nil
	}
	return nil, errors.New("give exactly one of --authorize-id and --authorize-member-of")
}

// runCall sends one POST with a go-spiffe mTLS client whose own SVID and
// bundle come from the Workload API, and prints the answer.
func runCall(args []string) error {
	fs := flag.NewFlagSet("call", flag.ExitOnError)
	addr := fs.String("addr", "", "Workload API address")
	url := fs.String("url", "", "https URL to POST to")
	id := fs.String("authorize-id", "", "the server's expected SPIFFE ID (tlsconfig.AuthorizeID)")
	memberOf := fs.String("authorize-member-of", "", "accept any server of this trust domain")
	body := fs.String("body", "", "request body (JSON)")
	var headers multiFlag
	fs.Var(&headers, "header", "extra request header 'Name: value' (repeatable)")
	timeout := fs.Duration("timeout", 20*time.Second, "give up after this long")
	_ = fs.Parse(args)
	authorizer, err := authorizerFrom(*id, *memberOf)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	source, err := openX509Source(ctx, *addr)
	if err != nil {
		return err
	}
	defer source.Close()
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   tlsconfig.MTLSClientConfig(source, source, authorizer),
		ForceAttemptHTTP2: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, *url, strings.NewReader(*body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return errors.New("header must be 'Name: value': " + h)
		}
		req.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	answer, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	ev := map[string]any{"type": "response", "status": res.StatusCode, "proto": res.Proto, "body": string(answer)}
	if res.TLS != nil && len(res.TLS.PeerCertificates) > 0 {
		if peer, err := x509svid.IDFromCert(res.TLS.PeerCertificates[0]); err == nil {
			ev["peer"] = peer.String()
		}
	}
	emit(ev)
	return nil
}

// runServe answers every request with the caller's SPIFFE ID (as go-spiffe
// saw it) and the request, until stdin closes. Each request that reaches the
// handler is also reported as a line, so a test can prove that a refused
// handshake ran nothing.
func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("addr", "", "Workload API address")
	id := fs.String("authorize-id", "", "the only client SPIFFE ID accepted")
	memberOf := fs.String("authorize-member-of", "", "accept any client of this trust domain")
	timeout := fs.Duration("timeout", 20*time.Second, "give up waiting for the first SVID after this long")
	_ = fs.Parse(args)
	authorizer, err := authorizerFrom(*id, *memberOf)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	source, err := openX509Source(ctx, *addr)
	cancel()
	if err != nil {
		return err
	}
	defer source.Close()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	var out sync.Mutex
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		peer := ""
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			if p, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0]); err == nil {
				peer = p.String()
			}
		}
		answer := map[string]any{"peer": peer, "method": r.Method, "path": r.URL.Path, "proto": r.Proto, "body": string(body)}
		out.Lock()
		emit(map[string]any{"type": "request", "peer": peer, "method": r.Method, "path": r.URL.Path})
		out.Unlock()
		w.Header().Set("Content-Type", "application/json")
		var buf bytes.Buffer
		_ = jsonEncode(&buf, answer)
		_, _ = w.Write(buf.Bytes())
	})
	server := &http.Server{
		Handler:           handler,
		TLSConfig:         tlsconfig.MTLSServerConfig(source, source, authorizer),
		ReadHeaderTimeout: 10 * time.Second,
	}
	out.Lock()
	emit(map[string]any{"type": "listening", "addr": listener.Addr().String()})
	out.Unlock()
	go func() {
		// The test ends the server by closing stdin.
		_, _ = io.Copy(io.Discard, os.Stdin)
		_ = server.Close()
	}()
	if err := server.ServeTLS(listener, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
