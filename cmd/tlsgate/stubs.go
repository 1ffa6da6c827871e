package main

import (
	"fmt"
	"io"
)

func cmdServe(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "tlsgate serve: not built yet")
	return exitRuntime
}

func cmdMTAConfig(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "tlsgate mta-config: not built yet")
	return exitRuntime
}
