package main

import (
	"fmt"
	"strings"
)

var bulkKeys = []string{"down1", "down4", "up1", "up4"}

// markdown renders results.md: the machine, then bulk, tunnels and idle
// tables with ratios, then the targets checked.
func markdown(res *results) string {
	var b strings.Builder
	m := res.Machine
	fmt.Fprintf(&b, "Machine: %s, %d cores, Linux %s; bench %s, portico %s built with %s; %s; %s.\n\n",
		m.CPU, m.Cores, m.Kernel, m.GoVersion, orNA(m.Revision, "(revision unknown)"), m.Portico, orNA(m.V2Ray, "v2ray n/a"), m.Date)
	s := res.Settings
	if s.Rounds == 0 { // no tunnels or bulk phase, or results.json from before rounds were counted
		s.Rounds = s.Repeat
	}
	fmt.Fprintf(&b, "Each figure is the median of %d runs: bulk %s per figure (split over the streams), "+
		"%d sequential tunnels and %d tunnels %d at a time per run; idle: %d tunnels held open once per row on fresh processes. "+
		"The whole run took %.0f s", s.Rounds, sizeText(s.BulkBytes), s.SeqTunnels, s.ConcTunnels, s.Concurrency, s.IdleTunnels, res.Seconds)
	if s.Rounds < s.Repeat && !res.Partial { // a partial run says so below
		fmt.Fprintf(&b, " (not the %d of -repeat: round %d would not have ended within -timeout, %d s)", s.Repeat, s.Rounds+1, s.TimeoutSecond)
	}
	if res.Partial {
		b.WriteString(" and stopped early: PARTIAL results")
	}
	b.WriteString(".\n\n")

	byName := map[string]*rowResult{}
	for _, r := range res.Rows {
		byName[r.Name] = r
	}
	floor, nohop := byName["floor"], byName["floor-nohop"]
	fullIdle := func(r *rowResult) bool { // near enough every asked tunnel open to compare RSS
		return float64(r.Idle.Tunnels) >= 0.95*float64(res.Settings.IdleTunnels)
	}
	twin := func(r *rowResult) *rowResult { // v2ray's same protocol and transport
		if r.Kind != "portico" {
			return nil
		}
		return byName["v2ray "+r.Name]
	}
	nohopFor := func(r *rowResult) *rowResult { // tunnels only
		if r.Kind != "portico" && r.Kind != "v2ray" && r.Kind != "floor" {
			return nil
		}
		return nohop
	}
	rawTLS := func(r *rowResult) *rowResult { // the same protocol over raw TLS
		if r.Transport == "" || r.Transport == "tcp" {
			return nil
		}
		prefix := ""
		if r.Kind == "v2ray" {
			prefix = "v2ray "
		}
		return byName[prefix+r.Protocol+"/tcp"]
	}

	b.WriteString("### Bulk (MB/s, 10^6 bytes/s)\n\n")
	b.WriteString("Ratios are given for ↓1 / ↓4 / ↑1 / ↑4 (download and upload, 1 and 4 streams). " +
		"The floor is a plain TLS forwarder with a tunnel's process layout (a local plain-TCP-to-TLS process, TLS, a relay process); " +
		"floor-nohop is its relay alone, the load generator speaking TLS to it, one process fewer than any tunnel has.\n\n")
	b.WriteString("| row | ↓ 1 stream | ↓ 4 streams | ↑ 1 stream | ↑ 4 streams | × floor | × raw TLS | × v2ray | × floor-nohop |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range res.Rows {
		if r.Bulk == nil {
			fmt.Fprintf(&b, "| %s | %s | | | | | | | |\n", r.Name, rowState(r))
			continue
		}
		fmt.Fprintf(&b, "| %s ", r.Name)
		for _, k := range bulkKeys {
			if len(r.Bulk[k].Runs) == 0 {
				b.WriteString("| failed ")
				continue
			}
			fmt.Fprintf(&b, "| %.0f ", r.Bulk[k].Median)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", bulkRatios(r, floor), bulkRatios(r, rawTLS(r)), bulkRatios(r, twin(r)), bulkRatios(r, nohopFor(r)))
	}

	b.WriteString("\n### New tunnels (1-byte echo, latency from the dial to the echoed byte)\n\n")
	b.WriteString("| row | sequential /s | p50 ms | p99 ms | 64 at a time /s | p50 ms | p99 ms | failed | × floor (seq / 64) | × v2ray | × floor-nohop |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range res.Rows {
		if r.Seq == nil || r.Conc == nil || len(r.Conc.PerSec.Runs) == 0 {
			fmt.Fprintf(&b, "| %s | %s | | | | | | | | | |\n", r.Name, rowState(r))
			continue
		}
		fmt.Fprintf(&b, "| %s | %.0f | %.2f | %.2f | %.0f | %.2f | %.2f | %d | %s | %s | %s |\n", r.Name,
			r.Seq.PerSec.Median, r.Seq.P50ms.Median, r.Seq.P99ms.Median,
			r.Conc.PerSec.Median, r.Conc.P50ms.Median, r.Conc.P99ms.Median, r.Seq.Failures+r.Conc.Failures,
			tunnelRatios(r, floor), tunnelRatios(r, twin(r)), tunnelRatios(r, nohopFor(r)))
	}

	b.WriteString("\n### CPU (user + system time of the row's processes together, from /proc)\n\n")
	b.WriteString("Per tunnel of the tunnels/s tests, and per MB (10^6 bytes) of each bulk figure: lower is better, " +
		"and the ratios are this row's CPU over the other's (below 1: cheaper). The load generator and sink are not counted; direct has no process.\n\n")
	b.WriteString("| row | µs per tunnel (seq / 64) | ms per MB ↓1 / ↓4 / ↑1 / ↑4 | tunnel × floor | tunnel × v2ray | MB × floor | MB × v2ray |\n|---|---|---|---|---|---|---|\n")
	for _, r := range res.Rows {
		if r.Kind == "direct" {
			continue
		}
		tun, mb := "", ""
		if r.Seq != nil && r.Conc != nil && len(r.Seq.CPUus.Runs) > 0 && len(r.Conc.CPUus.Runs) > 0 {
			tun = fmt.Sprintf("%.0f / %.0f", r.Seq.CPUus.Median, r.Conc.CPUus.Median)
		}
		if r.BulkCPU != nil {
			var parts []string
			for _, k := range bulkKeys {
				if f := r.BulkCPU[k]; f != nil && len(f.Runs) > 0 {
					parts = append(parts, fmt.Sprintf("%.2f", f.Median))
				} else {
					parts = append(parts, "–")
				}
			}
			mb = strings.Join(parts, " / ")
		}
		if tun == "" && mb == "" {
			fmt.Fprintf(&b, "| %s | %s | | | | | |\n", r.Name, rowState(r))
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", r.Name, tun, mb,
			tunnelCPURatios(r, floor), tunnelCPURatios(r, twin(r)), bulkCPURatios(r, floor), bulkCPURatios(r, twin(r)))
	}

	b.WriteString("\n### Idle tunnels (VmRSS with the tunnels open)\n\n")
	b.WriteString("| row | tunnels | client MiB | server MiB | client + server MiB | × v2ray |\n|---|---|---|---|---|---|\n")
	for _, r := range res.Rows {
		if r.Idle == nil {
			fmt.Fprintf(&b, "| %s | %s | | | | |\n", r.Name, rowState(r))
			continue
		}
		ratio := ""
		if t := twin(r); t != nil && t.Idle != nil && idleTotal(t) > 0 && fullIdle(t) && fullIdle(r) {
			ratio = fmt.Sprintf("%.2f", float64(idleTotal(r))/float64(idleTotal(t)))
		}
		open := fmt.Sprint(r.Idle.Tunnels)
		if r.Idle.Failed > 0 {
			open += fmt.Sprintf(" (%d failed)", r.Idle.Failed)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.Name, open,
			mib(r.Idle.ClientRSSKiB), mib(r.Idle.ServerRSSKiB), mib(idleTotal(r)), ratio)
	}

	var notes []string
	for _, r := range res.Rows {
		if r.Error != "" {
			failed := ""
			if r.BulkFailed > 0 {
				failed = fmt.Sprintf(" (%d bulk runs failed; each figure is the median of the others)", r.BulkFailed)
			}
			notes = append(notes, fmt.Sprintf("- %s: %s%s", r.Name, r.Error, failed))
		}
		if r.Idle != nil && r.Idle.Note != "" {
			notes = append(notes, fmt.Sprintf("- %s: idle: %s", r.Name, r.Idle.Note))
		}
	}
	if len(notes) > 0 {
		b.WriteString("\nErrors, n/a and notes:\n\n" + strings.Join(notes, "\n") + "\n")
	}

	b.WriteString("\n### Issue #11 targets\n\n")
	b.WriteString("Bulk checks take the worst of the four bulk ratios, tunnel checks the worse of sequential and 64 at a time.\n\n")
	b.WriteString("| row | check | worst ratio | target | met |\n|---|---|---|---|---|\n")
	check := func(r *rowResult, what string, ratio float64, ok bool, target string, atLeast bool) {
		if !ok {
			return
		}
		met := "yes"
		if (atLeast && ratio < parseTarget(target)) || (!atLeast && ratio > parseTarget(target)) {
			met = "**no**"
		}
		fmt.Fprintf(&b, "| %s | %s | %.2f | %s | %s |\n", r.Name, what, ratio, target, met)
	}
	for _, r := range res.Rows {
		if r.Kind != "portico" {
			continue
		}
		switch {
		case r.Transport == "tcp" && (r.Protocol == "vless" || r.Protocol == "vless-v1" || r.Protocol == "anytls"):
			v, ok := worstBulk(r, floor)
			check(r, "bulk × floor", v, ok, "≥ 0.90", true)
		case r.Transport == "tcp" && r.Protocol == "vmess":
			v, ok := worstBulk(r, floor)
			check(r, "bulk × floor", v, ok, "≥ 0.70", true)
		case r.Transport == "ws":
			v, ok := worstBulk(r, rawTLS(r))
			check(r, "bulk × raw TLS", v, ok, "≥ 0.85", true)
		case r.Transport == "grpc":
			v, ok := worstBulk(r, rawTLS(r))
			check(r, "bulk × raw TLS", v, ok, "≥ 0.75", true)
		}
		if v, ok := worstBulk(r, twin(r)); ok {
			check(r, "bulk × v2ray", v, ok, "≥ 1.50", true)
		}
		if v, ok := worstTunnels(r, floor); ok {
			check(r, "tunnels/s × floor", v, ok, "≥ 0.90", true)
		}
		if v, ok := worstTunnels(r, twin(r)); ok {
			check(r, "tunnels/s × v2ray", v, ok, "≥ 1.50", true)
		}
		if t := twin(r); t != nil && r.Idle != nil && t.Idle != nil && idleTotal(t) > 0 && fullIdle(t) && fullIdle(r) {
			check(r, "idle RSS × v2ray", float64(idleTotal(r))/float64(idleTotal(t)), true, "≤ 0.50", false)
		}
	}
	return b.String()
}

func parseTarget(s string) float64 {
	var v float64
	fmt.Sscanf(strings.TrimLeft(s, "≥≤ "), "%g", &v)
	return v
}

func rowState(r *rowResult) string {
	switch {
	case strings.HasPrefix(r.Error, "n/a"):
		return "n/a"
	case r.Error != "":
		return "error (below)"
	default:
		return "not run"
	}
}

func bulkRatios(r, base *rowResult) string {
	if base == nil || base.Bulk == nil || r == base {
		return ""
	}
	var parts []string
	for _, k := range bulkKeys {
		if len(r.Bulk[k].Runs) == 0 {
			parts = append(parts, "–")
			continue
		}
		parts = append(parts, ratio(r.Bulk[k].Median, base.Bulk[k].Median))
	}
	return strings.Join(parts, " / ")
}

func worstBulk(r, base *rowResult) (float64, bool) {
	if base == nil || base.Bulk == nil || r.Bulk == nil {
		return 0, false
	}
	worst := -1.0
	for _, k := range bulkKeys {
		if base.Bulk[k].Median <= 0 || len(r.Bulk[k].Runs) == 0 {
			return 0, false
		}
		if v := r.Bulk[k].Median / base.Bulk[k].Median; worst < 0 || v < worst {
			worst = v
		}
	}
	return worst, true
}

func tunnelCPURatios(r, base *rowResult) string {
	if base == nil || r == base || r.Seq == nil || r.Conc == nil || base.Seq == nil || base.Conc == nil ||
		len(r.Conc.CPUus.Runs) == 0 || len(base.Conc.CPUus.Runs) == 0 {
		return ""
	}
	return ratio(r.Seq.CPUus.Median, base.Seq.CPUus.Median) + " / " + ratio(r.Conc.CPUus.Median, base.Conc.CPUus.Median)
}

func bulkCPURatios(r, base *rowResult) string {
	if base == nil || r == base || r.BulkCPU == nil || base.BulkCPU == nil {
		return ""
	}
	var parts []string
	for _, k := range bulkKeys {
		a, b := r.BulkCPU[k], base.BulkCPU[k]
		if a == nil || b == nil || len(a.Runs) == 0 || len(b.Runs) == 0 {
			parts = append(parts, "–")
			continue
		}
		parts = append(parts, ratio(a.Median, b.Median))
	}
	return strings.Join(parts, " / ")
}

func tunnelRatios(r, base *rowResult) string {
	if base == nil || base.Seq == nil || base.Conc == nil || r == base || len(base.Conc.PerSec.Runs) == 0 {
		return ""
	}
	return ratio(r.Seq.PerSec.Median, base.Seq.PerSec.Median) + " / " + ratio(r.Conc.PerSec.Median, base.Conc.PerSec.Median)
}

func worstTunnels(r, base *rowResult) (float64, bool) {
	if base == nil || r.Seq == nil || r.Conc == nil || base.Seq == nil || base.Conc == nil ||
		len(r.Conc.PerSec.Runs) == 0 || len(base.Conc.PerSec.Runs) == 0 || base.Seq.PerSec.Median <= 0 || base.Conc.PerSec.Median <= 0 {
		return 0, false
	}
	return min(r.Seq.PerSec.Median/base.Seq.PerSec.Median, r.Conc.PerSec.Median/base.Conc.PerSec.Median), true
}

func ratio(a, b float64) string {
	if b <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func idleTotal(r *rowResult) int64 { return r.Idle.ClientRSSKiB + r.Idle.ServerRSSKiB }

func mib(kib int64) string {
	if kib == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f", float64(kib)/1024)
}

func sizeText(n int64) string {
	switch {
	case n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}

func orNA(s, na string) string {
	if s == "" {
		return na
	}
	return s
}
