package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a process the bench started. Only these are ever killed, each by
// its own PID.
type child struct {
	name string
	cmd  *exec.Cmd
	log  string // file with its stdout and stderr
	done chan struct{}
}

// children tracks every child still running.
type children struct {
	mu   sync.Mutex
	live map[int]*child
	all  []int // every PID ever started, for the test's leak check
}

func newChildren() *children { return &children{live: map[int]*child{}} }

// start runs name with args, its output going to logDir/label.log. The
// child gets SIGKILL if the bench dies without cleaning up (Pdeathsig).
func (cs *children) start(logDir, label, name string, args ...string) (*child, error) {
	logPath := filepath.Join(logDir, sanitize(label)+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", label, err)
	}
	c := &child{name: label, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(c.done) }()
	cs.mu.Lock()
	cs.live[cmd.Process.Pid] = c
	cs.all = append(cs.all, cmd.Process.Pid)
	cs.mu.Unlock()
	return c, nil
}

// kill stops c by its PID and waits for it.
func (cs *children) kill(c *child) {
	if c == nil {
		return
	}
	c.cmd.Process.Kill()
	<-c.done
	cs.mu.Lock()
	delete(cs.live, c.cmd.Process.Pid)
	cs.mu.Unlock()
}

// killAll stops every child still running.
func (cs *children) killAll() {
	cs.mu.Lock()
	var list []*child
	for _, c := range cs.live {
		list = append(list, c)
	}
	cs.mu.Unlock()
	for _, c := range list {
		cs.kill(c)
	}
}

// pids lists every PID started so far.
func (cs *children) pids() []int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return append([]int(nil), cs.all...)
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// pidOrZero is c's PID, or 0 for no process.
func (c *child) pidOrZero() int {
	if c == nil {
		return 0
	}
	return c.pid()
}

// cpuTime is the CPU (user and system, all threads) c has used so far; 0
// for no process.
func (c *child) cpuTime() time.Duration {
	if c == nil {
		return 0
	}
	d, _ := processCPU(c.pid())
	return d
}

// processCPU reads utime and stime of pid from /proc/PID/stat.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime or stime", pid)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on every
// Linux architecture Go runs on.
const clockTicks = 100

// exited reports whether c has ended.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// logTail is the end of c's log, for error messages.
func (c *child) logTail() string {
	b, _ := os.ReadFile(c.log)
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return strings.TrimSpace(string(b))
}

// waitListening waits until addr accepts TCP connections, c exits, or ctx
// or 15 s run out.
func waitListening(ctx context.Context, c *child, addr string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		if c.exited() {
			return fmt.Errorf("%s exited before listening on %s: %s", c.name, addr, c.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not listen on %s after 15 s: %s", c.name, addr, c.logTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// freePort returns a loopback TCP port that was free a moment ago (and
// whose UDP twin was free too, for QUIC).
func freePort() (int, error) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		pc, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			pc.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port pair")
}

// rssKiB reads VmRSS of pid from /proc.
func rssKiB(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' {
			return '-'
		}
		return r
	}, s)
}
