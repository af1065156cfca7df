package acme

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestZapToSlog(t *testing.T) {
	rec := &recordingHandler{}
	zl := zapToSlog(slog.New(rec)).Named("obtain").With(zap.String("identifier", "portico.test"))
	zl.Debug("quiet")
	zl.Info("obtaining certificate", zap.Duration("wait", time.Second))
	zl.Warn("careful")
	zl.Error("failed", zap.Error(errors.New("boom")))

	want := []struct {
		level slog.Level
		msg   string
		attrs map[string]string
	}{
		{slog.LevelDebug, "quiet", map[string]string{"certmagic": "obtain", "identifier": "portico.test"}},
		{slog.LevelInfo, "obtaining certificate", map[string]string{"wait": "1s"}},
		{slog.LevelWarn, "careful", nil},
		{slog.LevelError, "failed", map[string]string{"error": "boom"}},
	}
	if len(rec.records) != len(want) {
		t.Fatalf("got %d records, want %d", len(rec.records), len(want))
	}
	for i, w := range want {
		r := rec.records[i]
		if r.Level != w.level || r.Message != w.msg {
			t.Errorf("record %d = %v %q, want %v %q", i, r.Level, r.Message, w.level, w.msg)
		}
		got := map[string]string{}
		r.Attrs(func(a slog.Attr) bool {
			got[a.Key] = a.Value.String()
			return true
		})
		for k, v := range w.attrs {
			if got[k] != v {
				t.Errorf("record %d attr %s = %q, want %q (all: %v)", i, k, got[k], v, got)
			}
		}
	}

	// Levels the slog handler drops are not even built by zap.
	quiet := zapToSlog(slog.New(slog.NewTextHandler(nil, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if quiet.Core().Enabled(zap.InfoLevel) || !quiet.Core().Enabled(zap.ErrorLevel) {
		t.Error("zap core does not follow the slog handler's level")
	}
}
