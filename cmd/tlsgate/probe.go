package main

import "io"

func cmdProbe(args []string, stdout, stderr io.Writer) int { return exitUsage }
