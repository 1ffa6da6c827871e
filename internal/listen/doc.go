// Package listen opens and guards the sockets tlsgate serves on: the
// milter's, the socketmap's, the policy-delegation server's and the
// metrics endpoint's.
//
//   - [Open] turns a listener setting ("unix:/path" or a loopback
//     "inet:127.0.0.1:PORT") into a net.Listener. A unix socket is bound
//     inside a private directory and only moved into place once it has
//     its final mode and group, so no other user can connect to it in
//     between, whatever the process umask; and a socket directory that
//     other users could write to is refused (see [Open]).
//   - [Accept] is the accept loop's one step: errors that may pass (out of
//     file descriptors, a connection aborted in the backlog) are retried
//     with a growing delay instead of ending the server.
//   - [Conns] tracks the connections of one listener: a connection cap at
//     which a new connection evicts the slowest sender, else the
//     longest-idle connection; and a budget for the bytes buffered for
//     unfinished requests, over which the slowest sender is evicted too.
//     [ConnCap] shares the process's file-descriptor limit among the
//     listeners, so that one listener's clients cannot starve another's.
//
// The protocols themselves live in packages milter and policyd.
package listen
