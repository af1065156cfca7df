// Command portico is the Portico tunnel gateway and its client.
//
//	portico run [-c FILE] [-state DIR] [-listen HOST:PORT]   the gateway (no -c: the embedded default)
//	portico client [-listen HOST:PORT] (-c FILE | LINK)      a local SOCKS5/HTTP proxy through a tunnel
//	portico links (-c FILE | -state DIR) [-edge HOST[:PORT]]  share links, one per line (-edge: through an edge worker)
//	portico check -c FILE                                    validate a config and show what it serves
//	portico playground [-listen HOST:PORT] [-wasm DIR]       the WebAssembly playground page
//	portico user (list|add|del) [-inbound TAG] [-email E] …  users, through the admin API
//	portico stats [-reset] [-user E]                         traffic counters, through the admin API
//	portico reload                                           re-read the config, through the admin API
//	portico uuid                                             a new user id
//	portico version
//
// This file only parses flags and wires packages together; the logic lives
// in gateway/.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// errUsage is a flag error already reported by the flag package.
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(args[1:], stdout, stderr)
	case "client":
		err = cmdClient(args[1:], stdout, stderr)
	case "links":
		err = cmdLinks(args[1:], stdout, stderr)
	case "check":
		err = cmdCheck(args[1:], stdout, stderr)
	case "user":
		err = cmdUser(args[1:], stdout, stderr)
	case "stats":
		err = cmdStats(args[1:], stdout, stderr)
	case "reload":
		err = cmdReload(args[1:], stdout, stderr)
	case "uuid":
		err = cmdUUID(args[1:], stdout, stderr)
	case "playground":
		err = cmdPlayground(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "portico %s\n", version)
	case "help", "-h", "-help", "--help":
		usage(stdout)
	default:
		fmt.Fprintf(stderr, "portico: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, flag.ErrHelp):
		return 0
	}
	fmt.Fprintf(stderr, "portico: %v\n", err)
	return 1
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage:
  portico run [-c FILE] [-state DIR] [-listen HOST:PORT]   run the gateway (no -c: the embedded default)
  portico client [-listen HOST:PORT] (-c FILE | LINK)      local SOCKS5/HTTP proxy through a tunnel
  portico links (-c FILE | -state DIR) [-edge HOST[:PORT]]  print share links, one per line (-edge: through an edge worker)
  portico check -c FILE                                    validate a config and show what it would serve
  portico user list [-inbound TAG] [-json]                 list users (admin API)
  portico user add -inbound TAG -email E [-id UUID | -password P] [-alter-id N] [-level N] [-quota 10GB] [-expiry 30d]
                                                           add a user, effective at once (admin API)
  portico user del -inbound TAG -email E                   remove a user (admin API)
  portico stats [-reset] [-user E] [-json]                 traffic counters (admin API)
  portico reload                                           re-read the config; on error the old one keeps running (admin API)
  portico uuid                                             print a new user UUID
  portico playground [-listen HOST:PORT] [-wasm DIR]       serve the browser playground (default 127.0.0.1:8080)
  portico version                                          print the version
Common flags: -log-level debug|info|warn|error, -log-format text|json
Admin API flags: -admin HOST:PORT|unix:/path (default $PORTICO_ADMIN, else 127.0.0.1:9090), -token T (default $PORTICO_ADMIN_TOKEN)
`)
}
