// Package maillog reads the mail log of a Postfix or Sendmail host and
// turns the lines that matter for TLS into typed events: Postfix's TLS
// summary lines (tls_log_summary), smtpd connect, client and disconnect
// lines, qmgr from= and removed lines, smtp delivery lines, Sendmail's
// STARTTLS=, from= and to= lines, and tlsgate's own decision lines.
//
// Input is what administrators have: syslog files with classic timestamps
// ("Dec  7 19:41:19", no year), rsyslog's high-precision and
// "journalctl -o short-iso" timestamps ("2026-12-07T19:41:19+0000"),
// Postfix's own maillog_file, plain or gzip-compressed (detected by its
// magic bytes, so rotated .gz files and compressed standard input both
// work).
//
// The reader is built for a month of a busy relay: it streams, parses with
// prefix checks instead of regular expressions, and reuses one line buffer
// and one event, so that reading allocates nothing per line. A line that
// is too long, binary, truncated or not a syslog line is skipped and
// counted ([Stats]); nothing in the input can make reading fail, only an
// I/O error can.
//
// A classic timestamp has no year. The reader infers it from a reference
// time (the file's modification time, or now): a date later than the
// reference belongs to the year before, so a log that spans New Year is
// read in order as long as it covers less than a year.
//
// The log formats, with their sources, are described in
// shared/reference/logs-and-queue.md: Postfix tls_misc.c
// (tls_log_summary), log_adhoc.c (delivery lines) and smtpd.c (the
// disconnect line's command counts); Sendmail tls.c (tls_get_info) and
// deliver.c/srvrsmtp.c (to=/from= lines); tlsgate's milter/logline.go.
package maillog
