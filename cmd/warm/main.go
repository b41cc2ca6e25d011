// Command warm fills and inspects a modelcache directory.
//
// Run "warm --help" for the subcommands; docs/CLI.md describes each.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	exitSignal  = 130 // interrupted, as shells report SIGINT
)

// usageError marks errors in how warm was called.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

// errReported is returned by a command that already printed its errors;
// it sets the exit status without printing anything more.
var errReported = errors.New("reported")

// errInterrupted: the command stopped on SIGINT after reporting so.
var errInterrupted = errors.New("interrupted")

func main() {
	// go-redis logs every failed dial to stderr; warm reports a Redis that
	// does not answer once, in its own words (warm stats: "l3: ... down").
	redis.SetLogger(quietRedis{})
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// run executes warm with args and returns the exit status. Errors are
// printed as one line on stderr.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := newRootCmd(stdout, stderr)
	cmd.SetArgs(args)
	err := cmd.Execute()
	if err == nil {
		return exitOK
	}
	if errors.Is(err, errInterrupted) {
		return exitSignal
	}
	if errors.Is(err, errReported) {
		return exitFailure
	}
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	fmt.Fprintf(stderr, "warm: %s\n", msg)
	var u usageError
	if errors.As(err, &u) {
		fmt.Fprintln(stderr, "Run 'warm --help' for usage.")
		return exitUsage
	}
	return exitFailure
}
