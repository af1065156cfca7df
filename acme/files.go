package acme

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// filesCheckInterval bounds how often FileSource looks at the files: often
// enough that a renewed certificate is served within a second, rarely enough
// that a busy listener does not stat twice per handshake.
const filesCheckInterval = time.Second

// FileSource serves a certificate/key pair kept in two files by someone else
// (certbot, a secrets mounter, an operator) and follows their changes.
//
// There is no background goroutine: GetCertificate itself looks at the files'
// modification time and size, at most once per second, and reloads the pair
// when either changed. A replacement that does not load (half written, wrong
// key, garbage) is logged once and the previous pair stays in service, so a
// bad deploy never takes the front door down. Safe for concurrent use.
type FileSource struct {
	certFile, keyFile string
	log               *slog.Logger
	now               func() time.Time // the clock, replaced by tests

	cur atomic.Pointer[tls.Certificate] // what handshakes get; never nil

	mu        sync.Mutex // serializes checks; guards the fields below
	nextCheck time.Time
	loaded    fileStamp // state of the files that produced cur
	failed    fileStamp // state whose reload failed and was logged
	hasFailed bool
}

// fileStamp identifies the state of both files cheaply. A missing file has
// size -1, so removing a file is a change too (and a failing one).
type fileStamp struct {
	certMod, certSize int64
	keyMod, keySize   int64
}

// Files serves the certificate/key pair at those paths and reloads it when
// either file changes (see FileSource). log receives reload failures; nil
// means slog.Default().
//
// A file that is missing, unreadable or not PEM, or a key that does not match
// the certificate, is a one-line error naming the file.
func Files(certFile, keyFile string, log *slog.Logger) (*FileSource, error) {
	if log == nil {
		log = slog.Default()
	}
	f := &FileSource{certFile: certFile, keyFile: keyFile, log: log, now: time.Now}
	// Stamp before reading: if a file changes in between, the next check
	// sees a different stamp and reloads, rather than missing the change.
	st := f.stat()
	cert, err := loadFiles(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	f.cur.Store(cert)
	f.loaded = st
	f.nextCheck = f.now().Add(filesCheckInterval)
	return f, nil
}

// GetCertificate returns the current pair, first reloading it if a check is
// due and the files changed.
func (f *FileSource) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.maybeReload()
	return f.cur.Load(), nil
}

func (f *FileSource) maybeReload() {
	// A handshake that finds another one already checking serves the
	// current pair instead of queueing behind the file system.
	if !f.mu.TryLock() {
		return
	}
	defer f.mu.Unlock()
	now := f.now()
	if now.Before(f.nextCheck) {
		return
	}
	f.nextCheck = now.Add(filesCheckInterval)

	st := f.stat()
	if st == f.loaded || (f.hasFailed && st == f.failed) {
		return // unchanged, or the same broken state we already reported
	}
	cert, err := loadFiles(f.certFile, f.keyFile)
	if err != nil {
		f.failed, f.hasFailed = st, true
		f.log.Error("acme: reload of certificate files failed; still serving the previous pair",
			"cert", f.certFile, "key", f.keyFile, "err", err)
		return
	}
	f.cur.Store(cert)
	f.loaded, f.hasFailed = st, false
	f.log.Info("acme: reloaded certificate files", "cert", f.certFile, "key", f.keyFile,
		"not_after", cert.Leaf.NotAfter)
}

func (f *FileSource) stat() fileStamp {
	st := fileStamp{certSize: -1, keySize: -1}
	if fi, err := os.Stat(f.certFile); err == nil {
		st.certMod, st.certSize = fi.ModTime().UnixNano(), fi.Size()
	}
	if fi, err := os.Stat(f.keyFile); err == nil {
		st.keyMod, st.keySize = fi.ModTime().UnixNano(), fi.Size()
	}
	return st
}

// loadFiles reads and parses the pair; errors are one line, prefixed
// "acme: files:", and name the file at fault.
func loadFiles(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("acme: files: read certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("acme: files: read key: %w", err)
	}
	cert, err := parsePair(certFile, keyFile, certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("acme: files: %w", err)
	}
	return cert, nil
}
