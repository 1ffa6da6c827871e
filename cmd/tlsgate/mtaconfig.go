package main

import (
	"fmt"
	"io"
)

func cmdMTAConfig(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "tlsgate mta-config: not built yet")
	return exitRuntime
}
