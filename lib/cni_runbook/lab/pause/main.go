// Command pause is the lab's pod sandbox process: the same job as the
// upstream kubernetes/build/pause/linux/pause.c, in Go so that it builds from
// the Go toolchain alone. It holds the pod's namespaces open, reaps children
// (it is PID 1 when the pod shares its PID namespace) and exits cleanly on
// SIGINT or SIGTERM.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is reported by -v, like upstream's pause.
const version = "3.10.1-cnilab"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Printf("pause.go %s\n", version)
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "Warning: pause should be the first process")
	}

	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		switch sig {
		case syscall.SIGCHLD:
			reapChildren()
		default:
			fmt.Fprintf(os.Stderr, "Shutting down, got signal: %s\n", sig)
			os.Exit(0)
		}
	}
}

// reapChildren collects every exited child without blocking; one SIGCHLD may
// stand for several exits.
func reapChildren() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
