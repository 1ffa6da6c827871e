package bench

import (
	"fmt"
	"strconv"
	"strings"

	gomilter "github.com/d--j/go-milter"

	"github.com/tlsgate/tlsgate/milter"
)

// noopActions and noopProtocols mirror the negotiation of tlsgate's milter
// (package milter: it may add and change headers, and needs no RCPT, DATA,
// body, EOH or unknown events nor replies to connect, HELO and headers), so
// that the no-op server gets exactly the events tlsgate gets and the
// comparison measures tlsgate's own work, not a different conversation.
const (
	noopActions   = gomilter.OptAddHeader | gomilter.OptChangeHeader
	noopProtocols = gomilter.OptNoRcptTo | gomilter.OptNoData | gomilter.OptNoBody |
		gomilter.OptNoEOH | gomilter.OptNoUnknown |
		gomilter.OptNoConnReply | gomilter.OptNoHeloReply | gomilter.OptNoHeaderReply
)

// NewNoopMilterServer returns a go-milter server whose milter does nothing
// (gomilter.NoOpMilter), negotiating like tlsgate's milter and requesting the
// same macros. Serve it on a listener; Close stops it.
func NewNoopMilterServer() *gomilter.Server {
	return gomilter.NewServer(
		gomilter.WithMilter(func() gomilter.Milter { return gomilter.NoOpMilter{} }),
		gomilter.WithActions(noopActions),
		gomilter.WithProtocols(noopProtocols),
		gomilter.WithMacroRequest(gomilter.StageConnect, milter.ConnectMacros),
		gomilter.WithMacroRequest(gomilter.StageHelo, milter.HeloMacros),
		gomilter.WithMacroRequest(gomilter.StageMail, milter.MailMacros),
		gomilter.WithMacroRequest(gomilter.StageEOM, milter.EOMMacros),
	)
}

// Milter stages as Postfix reports macros in them.
const (
	stConnect = iota
	stHelo
	stMail
	stRcpt
	stData
	stEOM // header, EOH, body and EOM come from cleanup(8)
)

// postfixMacros answers go-milter's client with the macros Postfix 3.7
// sends at each stage when the milter requests them (observed in the lab,
// shared/reference/real-mta-lab.md): the connection macros everywhere except
// {client_resolve}/{client_connections} at EOM, the TLS macros from the EHLO
// after STARTTLS to DATA, {mail_*} from MAIL, {rcpt_*} from RCPT and "i" from
// DATA on; nothing from a trusted certificate unless the client presented one.
type postfixMacros struct {
	stage   int
	conn    map[string]string
	tls     map[string]string // nil before STARTTLS
	mail    map[string]string
	rcpt    map[string]string
	queueID string
}

var _ gomilter.Macros = (*postfixMacros)(nil)

func newPostfixMacros(c InboundClient, port int) *postfixMacros {
	return &postfixMacros{conn: map[string]string{
		"j": "mx.lab.test", "{daemon_name}": "mx.lab.test", "{daemon_addr}": "127.0.0.1", "{daemon_port}": "25",
		"v": "Postfix 3.7.11", "_": c.Name + " [" + c.Addr + "]",
		"{client_addr}": c.Addr, "{client_port}": strconv.Itoa(port), "{client_name}": c.Name, "{client_ptr}": c.Name,
		"{client_resolve}": "OK", "{client_connections}": "0",
	}}
}

func (m *postfixMacros) Get(name string) string { v, _ := m.GetEx(name); return v }

func (m *postfixMacros) GetEx(name string) (string, bool) {
	switch {
	case name == "i":
		return m.queueID, m.stage >= stData && m.queueID != ""
	case m.stage == stEOM && (name == "{client_resolve}" || name == "{client_connections}"):
		return "", false
	}
	if v, ok := m.conn[name]; ok {
		return v, true
	}
	if m.stage >= stEOM {
		return "", false
	}
	if v, ok := m.tls[name]; ok && m.stage >= stHelo {
		return v, true
	}
	if v, ok := m.mail[name]; ok && m.stage >= stMail {
		return v, true
	}
	if v, ok := m.rcpt[name]; ok && m.stage >= stRcpt {
		return v, true
	}
	return "", false
}

// benchHeaders are the headers of every benchmark message (Postfix does not
// pass its own Received header to milters).
var benchHeaders = [][2]string{
	{"Received", "from out.example (out.example [192.0.2.1]) by mx.partner.example (Postfix) with ESMTPS id 4Xq1; Sat, 28 Nov 2026 15:52:52 +0000"},
	{"Authentication-Results", "mx.partner.example; spf=pass smtp.mailfrom=partner.example"},
	{"DKIM-Signature", "v=1; a=rsa-sha256; d=partner.example; s=s1; h=from:to:subject:date; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=dGVzdA=="},
	{"From", "Sender <sender@partner.example>"},
	{"To", "<u1@lab.test>, <u2@lab.test>"},
	{"Subject", "benchmark message"},
	{"Date", "Sat, 28 Nov 2026 15:52:52 +0000"},
	{"Message-ID", "<bench.1@partner.example>"},
	{"MIME-Version", "1.0"},
	{"Content-Type", "text/plain; charset=us-ascii"},
}

var benchBody = []byte(strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do.\r\n", 32)) // 2 KB

// MilterStepper is a milter load client playing Postfix: each SMTP session
// opens a milter connection (CONNECT, EHLO, STARTTLS, EHLO with the TLS
// macros), sends PerConn messages (MAIL, two RCPTs, DATA, ten headers, EOH,
// a 2 KB body, EOM, then ABORT as Postfix does after every message) and
// closes it. One Step is one message; the first message of a session
// includes opening it.
type MilterStepper struct {
	client  *gomilter.Client
	clients []InboundClient
	perConn int
	id, seq int

	sess *gomilter.ClientSession
	mac  *postfixMacros
	left int
}

// NewMilterStepper returns a stepper for the milter at network/addr
// ("unix", "/path" or "tcp", "127.0.0.1:PORT"), cycling through clients
// (one per SMTP session) with perConn messages per session.
func NewMilterStepper(network, addr string, clients []InboundClient, perConn, id int) (*MilterStepper, error) {
	if len(clients) == 0 || perConn < 1 {
		return nil, fmt.Errorf("bench: milter stepper: %d clients, %d messages per connection", len(clients), perConn)
	}
	return &MilterStepper{client: gomilter.NewClient(network, addr), clients: clients, perConn: perConn, id: id, seq: id}, nil
}

func (s *MilterStepper) open() error {
	c := s.clients[s.seq%len(s.clients)]
	s.seq++
	port := 40000 + s.seq%20000
	s.mac = newPostfixMacros(c, port)
	sess, err := s.client.Session(s.mac)
	if err != nil {
		return err
	}
	s.sess = sess
	s.mac.stage = stConnect
	if _, err := sess.Conn(c.Name, gomilter.FamilyInet, uint16(port), c.Addr); err != nil {
		return err
	}
	s.mac.stage = stHelo
	if _, err := sess.Helo(c.Name); err != nil { // EHLO before STARTTLS
		return err
	}
	s.mac.tls = map[string]string{"{tls_version}": "TLSv1.3", "{cipher}": "TLS_AES_256_GCM_SHA384", "{cipher_bits}": "256"}
	if c.Subject != "" {
		s.mac.tls["{cert_subject}"] = c.Subject
		s.mac.tls["{cert_issuer}"] = c.Issuer
	}
	if _, err := sess.Helo(c.Name); err != nil { // EHLO after STARTTLS
		return err
	}
	s.left = s.perConn
	return nil
}

func (s *MilterStepper) drop() {
	if s.sess != nil {
		s.sess.Close()
	}
	s.sess = nil
}

// Step runs one message and returns "accept", "continue" or the refusal.
func (s *MilterStepper) Step() (string, error) {
	ans, err := s.message()
	if err != nil {
		s.drop()
		return "", err
	}
	s.left--
	if s.left == 0 {
		err = s.sess.Close()
		s.sess = nil
	}
	return ans, err
}

func (s *MilterStepper) message() (string, error) {
	if s.sess == nil {
		if err := s.open(); err != nil {
			return "", err
		}
	}
	m, sess := s.mac, s.sess
	m.stage = stMail
	m.mail = map[string]string{"{mail_addr}": "sender@partner.example", "{mail_host}": "partner.example", "{mail_mailer}": "smtp"}
	act, err := sess.Mail("<sender@partner.example>", "")
	if err != nil {
		return "", err
	}
	if act.Type != gomilter.ActionContinue {
		return "mail-" + actionLabel(act), sess.Abort(nil)
	}
	m.stage = stRcpt
	for _, r := range []string{"u1@lab.test", "u2@lab.test"} {
		m.rcpt = map[string]string{"{rcpt_addr}": r, "{rcpt_host}": "lab.test", "{rcpt_mailer}": "local"}
		if _, err := sess.Rcpt("<"+r+">", ""); err != nil {
			return "", err
		}
	}
	m.stage = stData
	m.queueID = fmt.Sprintf("4X%02X%07X", s.id&0xff, s.seq&0xfffffff)
	if _, err := sess.DataStart(); err != nil {
		return "", err
	}
	m.stage = stEOM
	for _, h := range benchHeaders {
		if _, err := sess.HeaderField(h[0], h[1], nil); err != nil {
			return "", err
		}
	}
	if _, err := sess.HeaderEnd(); err != nil {
		return "", err
	}
	if _, err := sess.BodyChunk(benchBody); err != nil {
		return "", err
	}
	_, act, err = sess.End()
	if err != nil {
		return "", err
	}
	m.stage = stHelo
	m.mail, m.rcpt, m.queueID = nil, nil, ""
	return actionLabel(act), sess.Abort(nil)
}

func actionLabel(a *gomilter.Action) string {
	switch a.Type {
	case gomilter.ActionAccept:
		return "accept"
	case gomilter.ActionContinue:
		return "continue"
	case gomilter.ActionReject:
		return "reject"
	case gomilter.ActionTempFail:
		return "tempfail"
	case gomilter.ActionRejectWithCode:
		return "reply-" + strconv.Itoa(int(a.SMTPCode))
	case gomilter.ActionDiscard:
		return "discard"
	}
	return "other"
}

// Close closes an open milter session.
func (s *MilterStepper) Close() error {
	s.drop()
	return nil
}
