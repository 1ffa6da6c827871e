package main

import "io"

func cmdWhatif(args []string, stdout, stderr io.Writer) int { return exitUsage }
